"""Callbacks of the training loop: called at every statistics fetch with the step, state, host statistics and
contexts; a stop request ends training gracefully with a checkpoint, and resuming from it reproduces an
uninterrupted run exactly; the ready-made TimeLimit and EnergyTarget; invalid callbacks refused."""

import jax
import numpy as np
import pytest

from conftest import tiny_dot_vmc
from qvmc import checkpoint
from qvmc.callbacks import EnergyTarget, TimeLimit
from qvmc.loggers import Logger
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


class RecordingLogger(Logger):
    """A user's logger: keeps every fetched step's mean acceptance, rewinds with the loop."""

    def __init__(self):
        self.rows, self.dispatched_steps, self.closed = [], [], False

    def dispatched(self, step):
        self.dispatched_steps.append(step)

    def log(self, records, seconds_per_step):
        assert seconds_per_step >= 0
        self.rows += [(r.step, float(np.mean([float(b.acceptance) for b in r.info.blocks])), len(r.contexts))
                      for r in records]

    def mark(self):
        return len(self.rows)

    def rewind(self, mark):
        del self.rows[mark:]

    def close(self):
        self.closed = True


def test_user_logger_and_checkpoint_policy(vmc, tmp_path):
    """A user's logger receives every step once, in order, next to the history file; a custom checkpoint
    policy decides the checkpoints (the last step is always written); the run equals one without them."""
    key = jax.random.PRNGKey(0)
    reference = train(vmc, vmc.init(key), key, 8, log_every=2, print_fn=None)
    logger, asked = RecordingLogger(), []

    def odd_steps(step, num_steps):
        asked.append(step)
        return step % 2 == 1
    run = str(tmp_path / 'run')
    state = train(vmc, vmc.init(key), key, 8, run_dir=run, log_every=4, print_fn=None, loggers=[logger],
                  checkpoint_policy=odd_steps, keep_checkpoints=10)
    assert [r[0] for r in logger.rows] == list(range(1, 9)) and logger.dispatched_steps == list(range(1, 9))
    assert all(0 < r[1] <= 1 and r[2] == 2 for r in logger.rows) and logger.closed
    history = load_history(run)
    assert sorted(history['step'].unique()) == list(range(1, 9))
    assert sorted(s for s, _ in checkpoint.list_checkpoints(run)) == [1, 3, 5, 7, 8]
    assert asked == list(range(1, 8))  # the last step is checkpointed without asking
    np.testing.assert_array_equal(_flat(state), _flat(reference))


@pytest.mark.parametrize('kwargs, message', [
    (dict(callbacks=[42]), 'callbacks\\[0\\] must be callable'),
    (dict(loggers=[print]), 'loggers\\[0\\] must have a method log'),
    (dict(checkpoint_policy=5), 'checkpoint_policy must be callable'),
])
def test_invalid_callbacks_refused(vmc, kwargs, message):
    with pytest.raises(ValueError, match=message):
        train(vmc, vmc.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(0), 2, **kwargs)


@pytest.mark.parametrize('make, message', [
    (lambda: TimeLimit(0), 'TimeLimit'), (lambda: TimeLimit(float('nan')), 'TimeLimit'),
    (lambda: EnergyTarget([np.inf]), 'EnergyTarget'),
])
def test_invalid_ready_made_callbacks(make, message):
    with pytest.raises(ValueError, match=message):
        make()
