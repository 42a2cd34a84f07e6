"""Callbacks of the training loop: called at every statistics fetch with the step, state, host statistics and
contexts; a stop request ends training gracefully with a checkpoint, and resuming from it reproduces an
uninterrupted run exactly; the ready-made TimeLimit and EnergyTarget; invalid callbacks refused."""

import jax
import numpy as np
import pytest

from conftest import tiny_dot_vmc
from qvmc import checkpoint
from qvmc.callbacks import EnergyTarget, TimeLimit
from qvmc.train import load_history, train


@pytest.fixture(scope='module')
def vmc():
    return tiny_dot_vmc()


def _flat(state):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves((state.params, state.chains))])


def test_callback_sees_each_fetch_and_stops_gracefully_then_resume_is_exact(vmc, tmp_path):
    key = jax.random.PRNGKey(0)
    reference = train(vmc, vmc.init(key), key, 8, log_every=2, print_fn=None)
    seen = []

    def watch(step, state, info, contexts):
        seen.append((step, int(np.asarray(state.step)), len(info.blocks), [c.label() for c in contexts]))
        assert all(np.isfinite(float(b.energy)) for b in info.blocks)
        return step == 4  # a user's early stop

    run = str(tmp_path / 'run')
    stopped = train(vmc, vmc.init(key), key, 8, run_dir=run, log_every=2, checkpoint_every=3, print_fn=None,
                    callbacks=[watch])
    assert [s[0] for s in seen] == [2, 3, 4] and all(s[0] == s[1] and s[2] == 2 for s in seen)
    assert seen[0][3] == [c.label() for c in vmc.contexts]
    assert int(stopped.step) == 4 and checkpoint.list_checkpoints(run)[0][0] == 4  # stop checkpoint written
    assert load_history(run)['step'].max() == 4
    resumed = train(vmc, vmc.init(key), key, 8, run_dir=run, log_every=2, checkpoint_every=3, print_fn=None)
    assert int(resumed.step) == 8
    np.testing.assert_array_equal(_flat(resumed), _flat(reference))


def test_ready_made_callbacks(vmc):
    key = jax.random.PRNGKey(1)
    state = train(vmc, vmc.init(key), key, 6, log_every=1, print_fn=None, callbacks=[EnergyTarget(1e6)])
    assert int(state.step) == 1  # every block below a huge target after the first fetch
    state = train(vmc, vmc.init(key), key, 6, log_every=1, print_fn=None, callbacks=[TimeLimit(1e-9)])
    assert int(state.step) == 1  # the budget is spent at the first fetch
    state = train(vmc, vmc.init(key), key, 3, log_every=1, print_fn=None, callbacks=[EnergyTarget([-1e6, -1e6])])
    assert int(state.step) == 3  # never reached: runs to the end


@pytest.mark.parametrize('bad, message', [
    ([42], 'callbacks\\[0\\] must be callable'),
])
def test_invalid_callbacks_refused(vmc, bad, message):
    with pytest.raises(ValueError, match=message):
        train(vmc, vmc.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(0), 2, callbacks=bad)


@pytest.mark.parametrize('make, message', [
    (lambda: TimeLimit(0), 'TimeLimit'), (lambda: TimeLimit(float('nan')), 'TimeLimit'),
    (lambda: EnergyTarget([np.inf]), 'EnergyTarget'),
])
def test_invalid_ready_made_callbacks(make, message):
    with pytest.raises(ValueError, match=message):
        make()
