"""Benchmark setup: CPU unless JAX_PLATFORMS says otherwise; results printed as a table at the end."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

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
