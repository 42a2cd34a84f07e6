"""Subprocess entry point of the lost-host test (tests/test_lost_host.py): ``qvmc.train.train`` with
checkpoints, on one process or as one of several processes joined by ``jax.distributed``.

    python tests/_distributed_train_worker.py RUN_DIR NUM_STEPS HOST_DEVICES [PROCESS_ID NUM_PROCESSES PORT]

The tiny problem of tests/parallel_worker.py (N = 3 and N = 2 contexts, Adam), 16 walkers per context
sharded over every device of every process, ``checkpoint_every=2``, ``log_every=1``, and a 0.3 s pause
after each log line (so that a kill lands mid-run). Only process 0 writes files. Prints ``FINISHED``.
Not a test module (no ``test_`` prefix): pytest never imports it.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parallel_worker import _setup, make_vmc  # noqa: E402


def main(argv):
    run_dir, num_steps, host_devices = argv[0], int(argv[1]), int(argv[2])
    job = {'host_devices': host_devices}
    if len(argv) > 3:
        job.update(process_id=int(argv[3]), num_processes=int(argv[4]), coordinator=f'localhost:{argv[5]}')
    _setup(job)
    import jax
    from qvmc import parallel
    from qvmc.train import train

    mesh = parallel.make_mesh(jax.devices())
    vmc = make_vmc({'optimizer': 'adam', 'contexts': 2}, mesh)
    key = jax.random.PRNGKey(11)

    def log(line):
        print(line, flush=True)
        time.sleep(0.3)
    train(vmc, vmc.init(key), key, num_steps, run_dir=run_dir, checkpoint_every=2, log_every=1, print_fn=log)
    print('FINISHED', flush=True)


if __name__ == '__main__':
    main(sys.argv[1:])
