"""A regular install works away from the source checkout: a wheel built with ``python -m build`` and installed
in a fresh virtual environment lists and loads both shipped models, estimates one energy, and runs the
console tools (``qvmc-models``, ``qvmc-predict``). Marked ``install`` (not in the default run; ``.ci/run``
runs ``pytest -m install``): it installs the dependencies into a new environment."""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

pytestmark = [pytest.mark.install, pytest.mark.xdist_group('install')]  # one fresh venv for the file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = ('foundation_polarized', 'foundation_unpolarized', 'foundation_unpolarized_large')
SCRIPT = '''
import os, sys
import jax
from qvmc import pretrained
assert not os.path.exists(os.path.join(os.getcwd(), 'qvmc')), 'ran inside a checkout'
print('module', pretrained.__file__)
print('available', ','.join(pretrained.available()))
for name in {shipped!r}:
    model = pretrained.load(name)
    print('loaded', name, model.spin_sector, model.system)
model = pretrained.load('foundation_polarized')
est = model.estimate(2, 1.0, jax.random.PRNGKey(0), num_walkers=16, num_steps=20, burn_in_chunk=10,
                     min_burn_in=10, max_burn_in=40)
print('energy', est.energy.mean, est.energy.error)
'''


def _run(cmd, cwd, env, timeout=900):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f'{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}'
    return result.stdout


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """``(python, bin directory, work directory, env)`` of a fresh venv holding the wheel."""
    tmp = tmp_path_factory.mktemp('install')
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV', 'QVMC_MODELS_DIR')}
    env['JAX_PLATFORMS'] = 'cpu'
    source = tmp / 'source'  # a copy: a stale build/ of the checkout never reaches the wheel
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        '.git', '.venv', 'venv', 'build', 'dist', '*.egg-info', 'runs', '_build', '__pycache__', 'predictions'))
    _run([sys.executable, '-m', 'build', '--wheel', '--outdir', str(tmp / 'dist'), str(source)], tmp, env)
    wheels = list((tmp / 'dist').glob('qvmc-*.whl'))
    assert len(wheels) == 1, wheels
    names = zipfile.ZipFile(wheels[0]).namelist()
    for name in SHIPPED:
        assert f'qvmc/models/{name}.qvmc' in names and f'qvmc/models/{name}.md' in names
    assert not [n for n in names if n.startswith(('tests/', 'examples/', 'benchmarks/'))]
    _run([sys.executable, '-m', 'venv', str(tmp / 'venv')], tmp, env)
    bindir = tmp / 'venv' / 'bin'
    _run([str(bindir / 'python'), '-m', 'pip', 'install', '--quiet', str(wheels[0])], tmp, env)
    work = tmp / 'elsewhere'
    work.mkdir()
    return str(bindir / 'python'), bindir, work, env


def test_wheel_loads_both_shipped_models_and_estimates(installed):
    python, _, work, env = installed
    out = _run([python, '-c', SCRIPT.format(shipped=SHIPPED)], work, env)
    lines = dict(line.split(' ', 1) for line in out.strip().splitlines())
    assert 'site-packages' in lines['module'] and ROOT not in lines['module']
    assert set(SHIPPED) <= set(lines['available'].split(','))
    mean, error = (float(v) for v in lines['energy'].split())
    assert error > 0 and 3.596498882 - 5 * error < mean < 4.0  # variational: two polarized electrons, exact 3.5965


def test_console_tools_from_the_wheel(installed):
    _, bindir, work, env = installed
    assert set(SHIPPED) <= set(_run([str(bindir / 'qvmc-models'), 'list'], work, env).split())
    out = _run([str(bindir / 'qvmc-predict'), '--n', '2', '--lam', '1', '--model', 'foundation_polarized',
                '--walkers', '16', '--steps', '20', '--burn-in', '10', '10', '40', '--out', str(work / 'pred')],
               work, env)
    assert 'E           =' in out and (work / 'pred' / 'energy.csv').exists()
    bad = subprocess.run([str(bindir / 'qvmc-models'), 'show', 'nosuch'], cwd=work, env=env, capture_output=True,
                         text=True, timeout=300, check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
