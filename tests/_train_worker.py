"""Subprocess entry point of the crash-safety tests: a tiny blockwise-schedule training run that the tests
stop (SIGTERM), kill (SIGKILL, also inside a checkpoint write) and resume.

Used by tests/test_reliability.py, tests/test_resume.py and benchmarks/test_reliability.py. Usage::

    python tests/_train_worker.py RUN_DIR CACHE_DIR NUM_STEPS [--block-length K] [--checkpoint-every C]
                                  [--log-sleep S] [--full-optimization]

Two N = 2 quantum-dot contexts per block (λ ∈ [0, 4], seed 3), tiny Fermi Sets, Adam 1e-2, 16 walkers,
``train(..., keep_checkpoints=2, log_every=1)``; every process of a test runs the same program, so a
resumed run can be compared bit for bit with an uninterrupted one. JAX runs on the CPU in float64 with
the persistent compilation cache in ``CACHE_DIR`` (later processes skip compilation) and, unless
``--full-optimization``, with most XLA optimizations off (compile-bound at these sizes).

Environment: ``PAUSE_AT_STEP=n`` — after logging step n, create ``RUN_DIR/PAUSED`` and sleep
``PAUSE_SECONDS`` (default 5) or until ``RUN_DIR/CONTINUE`` exists (a signal sent then stops the loop
before the next step); ``PAUSE_IN_SAVE_AT=n`` — the n-th checkpoint
write stops with half of its bytes written, creates ``RUN_DIR/PAUSED`` and sleeps 600 s (killed there).
Prints ``FINISHED`` at the end; a graceful stop prints the drivers' line and exits with its status (75).
Not a test module (no ``test_`` prefix): pytest never imports it.
"""

import argparse
import os
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('run_dir')
    p.add_argument('cache_dir', help='persistent JAX compilation cache')
    p.add_argument('num_steps', type=int)
    p.add_argument('--block-length', type=int, default=4, help='steps per block of the λ schedule')
    p.add_argument('--checkpoint-every', type=int, default=4)
    p.add_argument('--log-sleep', type=float, default=0.0,
                   help='seconds to sleep after each log line (gives random kills room to land mid-run)')
    p.add_argument('--full-optimization', action='store_true', help='keep all XLA optimizations on')
    return p.parse_args(argv)


def setup_jax(cache_dir, full_optimization=False):
    """CPU, float64, the persistent compilation cache in ``cache_dir``; returns the ``jax`` module."""
    os.environ['JAX_PLATFORMS'] = 'cpu'
    import jax
    jax.config.update('jax_enable_x64', True)
    if not full_optimization:
        jax.config.update('jax_disable_most_optimizations', True)
    jax.config.update('jax_compilation_cache_dir', cache_dir)  # later processes skip compilation
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)
    return jax


def pause_inside_checkpoint_write(run_dir, pause_at):
    """Makes the ``pause_at``-th checkpoint write stop halfway (half of the bytes on disk) and hang."""
    from qvmc import checkpoint
    original, calls = checkpoint._write, [0]

    def paused_write(f, data):
        calls[0] += 1
        if calls[0] == pause_at:
            f.write(data[:len(data) // 2])
            f.flush()
            open(os.path.join(run_dir, 'PAUSED'), 'w').close()
            time.sleep(600)
        original(f, data)
    checkpoint._write = paused_write


def make_logger(run_dir, pause_at_step=0, log_sleep=0.0):
    """``print_fn`` of ``train``: prints, optionally sleeps, and pauses after logging ``pause_at_step``."""
    def log(line):
        print(line, flush=True)
        if log_sleep:
            time.sleep(log_sleep)  # a step of a real run takes longer: gives the kills room to land mid-run
        if pause_at_step and line.startswith(f'step {pause_at_step:2d}/'):
            open(os.path.join(run_dir, 'PAUSED'), 'w').close()
            deadline = time.time() + float(os.environ.get('PAUSE_SECONDS', '5'))
            while time.time() < deadline and not os.path.exists(os.path.join(run_dir, 'CONTINUE')):
                time.sleep(0.05)  # the signal arrives here; the loop stops before the next step
    return log


def main(argv=None):
    args = parse_args(argv)
    jax = setup_jax(args.cache_dir, args.full_optimization)
    import optax
    from ansatz import FermiSetsConfig, make_fermi_sets
    from hamiltonians import QuantumDot
    from qvmc import VMC, VMCConfig
    from qvmc.schedule import BlockwiseSchedule
    from qvmc.train import TrainingInterrupted, train

    save_pause = int(os.environ.get('PAUSE_IN_SAVE_AT', '0'))
    if save_pause:
        pause_inside_checkpoint_write(args.run_dir, save_pause)
    log = make_logger(args.run_dir, int(os.environ.get('PAUSE_AT_STEP', '0')), args.log_sleep)
    dot = QuantumDot()
    sched = BlockwiseSchedule(dot.context(1, 1), 'lam', (0.0, 4.0), block_length=args.block_length, num_contexts=2,
                              seed=3)
    vmc = VMC(make_fermi_sets(FermiSetsConfig(width=8, num_layers=1, num_heads=2, num_determinants=1, hidden=8)),
              dot, sched.contexts_at(0), optax.adam(1e-2),
              VMCConfig(num_walkers=16, mcmc_substeps=3, kinetic_method='hessian'))
    key = jax.random.PRNGKey(7)
    try:
        train(vmc, vmc.init(key), key, args.num_steps, run_dir=args.run_dir, checkpoint_every=args.checkpoint_every,
              keep_checkpoints=2, schedule=sched, burn_in_options=dict(chunk=4, min_steps=8, max_steps=24),
              log_every=1, print_fn=log)
    except TrainingInterrupted as stop:
        print(f'stopped at step {stop.step}; re-run the same command to resume', flush=True)
        sys.exit(stop.exit_code)
    print('FINISHED', flush=True)


if __name__ == '__main__':
    main()
