"""The documentation: the Sphinx build with warnings as errors and checked cross-references, every module
listed in the API reference, and every Python block of the tutorials and the README executed (each page
as one script, in a fresh process, in a scratch directory). Marked ``docs`` (not in the default run;
``.ci/run`` runs ``pytest -m docs``)."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.docs

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / 'docs'
PACKAGES = ('samplers', 'hamiltonians', 'ansatz', 'qvmc')
PAGES = sorted(DOCS.glob('tutorials/*.md')) + [ROOT / 'README.md']
FENCE = re.compile(r'^```python\n(.*?)^```', re.S | re.M)


def python_blocks(path: pathlib.Path):
    """The ``python`` fenced blocks of a Markdown page, in order."""
    return FENCE.findall(path.read_text(encoding='utf-8'))


def test_docs_build_with_warnings_as_errors(tmp_path):
    pytest.importorskip('sphinx')
    result = subprocess.run([sys.executable, '-m', 'sphinx', '-W', '-n', '--keep-going', '-q', '-b', 'html',
                             '-d', str(tmp_path / 'doctrees'), str(DOCS), str(tmp_path / 'html')],
                            env=dict(os.environ, JAX_PLATFORMS='cpu'), capture_output=True, text=True,
                            timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-5000:]
    assert (tmp_path / 'html' / 'api' / 'generated' / 'qvmc.train.html').exists()
    assert (tmp_path / 'html' / 'results' / 'time-to-energy.html').exists()


@pytest.mark.parametrize('package', PACKAGES)
def test_api_reference_lists_every_module(package):
    listed = set(re.findall(rf'^\s+({package}\.\w+)$', (DOCS / 'api' / f'{package}.md').read_text(), re.M))
    modules = {f'{package}.{p.stem}' for p in (ROOT / package).glob('*.py') if p.stem != '__init__'}
    assert listed == modules


def test_every_tutorial_has_code():
    for page in PAGES:
        assert python_blocks(page), f'{page.name} has no python block to run'


@pytest.mark.parametrize('page', PAGES, ids=lambda p: p.stem)
def test_page_code_runs(page, tmp_path):
    script = '\n\n'.join(python_blocks(page))
    (tmp_path / 'page.py').write_text(script, encoding='utf-8')
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(ROOT), MPLBACKEND='Agg')
    env.pop('QVMC_MODELS_DIR', None)
    result = subprocess.run([sys.executable, 'page.py'], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=1200, check=False)
    assert result.returncode == 0, f'{page.name}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}'
