"""Benchmark setup: CPU unless JAX_PLATFORMS says otherwise; results printed as a table at the end."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# jaxlib 0.10.2's XLA CPU runtime hangs in some programs on small hosts (all threads parked);
# its concurrency-optimized scheduler is the trigger (see test_scaling.py). Off unless set.
if 'concurrency_optimized_scheduler' not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               ' --xla_cpu_enable_concurrency_optimized_scheduler=false').strip()

import pytest  # noqa: E402

RESULTS = []


@pytest.fixture
def report():
    """Collects ``dict`` rows that are printed as a table when the session ends."""
    return RESULTS.append


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    import pandas as pd
    terminalreporter.write_sep('=', 'qvmc benchmark results')
    with pd.option_context('display.width', 200, 'display.max_columns', 30):
        terminalreporter.write_line(pd.DataFrame(RESULTS).to_string(index=False))
