"""Benchmark helpers: ``envvars`` (``QVMC_BENCH_*`` sizes checked before anything compiles) and ``watch``
(measurements in subprocesses; a run without CPU progress is killed and retried, never waited on forever)."""

import os
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))

from envvars import env_choice, env_float, env_int, env_list, env_str  # noqa: E402
import watch  # noqa: E402

NAME = 'QVMC_BENCH_UNIT_TEST'


def test_defaults_when_unset(monkeypatch):
    monkeypatch.delenv(NAME, raising=False)
    assert env_int(NAME, 64) == 64
    assert env_float(NAME, 1e-3) == 1e-3
    assert env_list(NAME, '5-8') == [5, 6, 7, 8]
    assert env_list(NAME, '0,1.5', float, minimum=0) == [0.0, 1.5]
    assert env_choice(NAME, 'float32', ('float32', 'float64')) == 'float32'
    assert env_str(NAME, 'runs/x') == 'runs/x'


def test_values_from_the_environment(monkeypatch):
    monkeypatch.setenv(NAME, ' 12 ')
    assert env_int(NAME, 64) == 12
    monkeypatch.setenv(NAME, '6,12, 20')
    assert env_list(NAME, '6', minimum=2, even=True) == [6, 12, 20]
    monkeypatch.setenv(NAME, 'moire')
    assert env_list(NAME, 'quantum_dot', cast=str, choices=('quantum_dot', 'moire')) == ['moire']
    monkeypatch.setenv(NAME, '0')
    assert env_float(NAME, 1.0, inclusive=True) == 0.0
    assert env_int(NAME, 2, minimum=0) == 0


@pytest.mark.parametrize('value, call, expected', [
    ('0', lambda: env_int(NAME, 64), 'an integer >= 1'),
    ('12x', lambda: env_int(NAME, 64), 'an integer >= 1'),
    ('1.5', lambda: env_int(NAME, 64), 'an integer >= 1'),
    ('-0.1', lambda: env_float(NAME, 0.05), 'a finite number > 0'),
    ('nan', lambda: env_float(NAME, 0.05), 'a finite number > 0'),
    ('inf', lambda: env_float(NAME, 0.05), 'a finite number > 0'),
    ('0', lambda: env_float(NAME, 0.05), 'a finite number > 0'),
    ('7,12', lambda: env_list(NAME, '6', minimum=2, even=True), 'comma-separated even integers >= 2'),
    ('6,,x', lambda: env_list(NAME, '6'), 'comma-separated integers'),
    ('', lambda: env_list(NAME, '6'), 'comma-separated integers'),
    ('1,-2', lambda: env_list(NAME, '1', float, minimum=0), 'comma-separated numbers >= 0'),
    ('gpu', lambda: env_list(NAME, 'moire', cast=str, choices=('moire',)), 'names from moire'),
    ('float16', lambda: env_choice(NAME, 'float32', ('float32', 'float64')), 'one of float32, float64'),
    ('  ', lambda: env_str(NAME, 'runs/x'), 'a non-empty string'),
])
def test_bad_values_name_the_variable_and_the_fix(monkeypatch, value, call, expected):
    monkeypatch.setenv(NAME, value)
    with pytest.raises(ValueError, match=NAME) as err:
        call()
    assert expected in str(err.value)
    assert f'unset {NAME}' in str(err.value)


def test_watch_returns_the_json_line_of_a_finished_run(tmp_path, monkeypatch):
    script = tmp_path / 'job.py'
    script.write_text('import json, sys\nprint("noise")\n'
                      'print(json.dumps({"twice": 2 * json.loads(sys.argv[1])["n"]}))\n')
    monkeypatch.setenv('QVMC_BENCH_RESTARTS', '0')
    assert watch.measure(str(script), {'n': 21}, dict(os.environ)) == ({'twice': 42, 'one_core': False}, 0)


def test_watch_kills_a_run_without_cpu_progress_and_retries(tmp_path, monkeypatch):
    """A sleeping process stands in for the XLA CPU deadlock (threads parked, CPU time flat)."""
    script = tmp_path / 'stuck.py'
    script.write_text('import time\ntime.sleep(120)\n')
    monkeypatch.setenv('QVMC_BENCH_RESTARTS', '1')
    monkeypatch.setenv('QVMC_BENCH_STALL_SECONDS', '1')
    start = time.time()
    assert watch.measure(str(script), {}, dict(os.environ)) == (None, 2)
    assert time.time() - start < 60


@pytest.mark.skipif(not hasattr(os, 'sched_setaffinity'), reason='needs CPU affinity (Linux)')
def test_watch_retries_a_stalled_run_on_one_core(tmp_path, monkeypatch):
    """A job that stalls whenever it may use more than one CPU (as the XLA deadlock does) finishes when
    the restart is pinned to one CPU (without the option it would stall every time, as above)."""
    script = tmp_path / 'needs_one_core.py'
    script.write_text('import json, os, time\ncpus = len(os.sched_getaffinity(0))\n'
                      'time.sleep(120) if cpus > 1 else None\nprint(json.dumps({"cpus": cpus}))\n')
    monkeypatch.setenv('QVMC_BENCH_RESTARTS', '1')
    monkeypatch.setenv('QVMC_BENCH_STALL_SECONDS', '1')
    result, restarts = watch.measure(str(script), {}, dict(os.environ), one_core_after_stall=True)
    assert result['cpus'] == 1 and result['one_core'] == (restarts == 1)
    assert restarts == (1 if len(os.sched_getaffinity(0)) > 1 else 0)


def test_watch_reports_a_failed_run(tmp_path, monkeypatch):
    script = tmp_path / 'fails.py'
    script.write_text('raise SystemExit("bad size")\n')
    monkeypatch.setenv('QVMC_BENCH_RESTARTS', '0')
    with pytest.raises(RuntimeError, match='bad size'):
        watch.measure(str(script), {'n': 3}, dict(os.environ))
