"""One-GPU check of the moiré QERNEL stack in under 10 minutes: step time and memory vs N, then a short
conditional training at N = 54 that writes a checkpoint, energies, densities and order parameters.

    python benchmarks/gpu/run_gpu.py --out runs/gpu                  # one GPU, defaults, < 10 min
    python benchmarks/gpu/run_gpu.py --cpu-smoke --out /tmp/gpu_smoke # tiny sizes on the CPU (a minute or two)

Part 1 (timing): for every N in ``--sizes`` (default 24, 54, 96, 150 spin-polarized electrons at
ν = 2/3), in a fresh process: the QERNEL default network (``max_orbitals = N``), a float32 network
with float64 reductions (``jax_enable_x64``), RWM, minSR — the peer-matched configuration of
``benchmarks/test_moire_time_to_energy.py`` — with ``--walkers`` walkers and the micro-batch
``VMCConfig.chunk_size`` from ``--chunk`` (``auto``: the largest power of two whose estimated
memory, ≈ 2.95 GB·(N/150)^2.6 per chunk walker from the CPU-compiled buffer sizes in README.md,
fits in ``--memory-fraction`` of the device; halved and retried on an out-of-memory error). It
records XLA's compiled memory analysis of the step (arguments + outputs + temporaries), the
device's peak bytes in use (GPU) and the process's peak RSS, the compile time and the median
time of ``--timed-steps`` steps.

Part 2 (training): ``examples/moire_transition.py`` at N = ``--train-n`` with the same network and
minSR over ``--train-lam-range`` (``--train-contexts`` λ per block), ``--train-steps`` steps,
then a ``--sweep-points`` λ sweep with energies, densities and the honeycomb order parameters.

Outputs under ``--out``: ``timing.csv`` (one row per N: ``status`` ok / oom / timeout / error /
skipped), ``train_n<N>/`` (the driver's run directory: ``checkpoint.qvmc``, ``history.csv``,
``sweep/energies.csv``, ``sweep/density.csv``, ``sweep/order_parameters.csv``, PNGs),
``summary.json`` and a log per process (``*.log``). ``--budget-s`` bounds the whole run: every
process gets the time left (sizes share the timing part, ``--train-reserve-s`` is kept for
training) and is stopped at its limit; whatever finished is written.

Every flag is checked before any process starts or anything compiles (exit status 2 on a bad one);
the training flags are checked by the driver's own parser.
"""

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'examples'))

from cli import check, int_at_least, parse_interval, parse_range, positive_float, positive_int  # noqa: E402

CPU_XLA_FLAGS = '--xla_cpu_enable_concurrency_optimized_scheduler=false'  # see benchmarks/README.md
BYTES_PER_WALKER_150 = 2.95e9  # per walker of one un-chunked step at N = 150 (README: 2814 MB compiled on CPU)
MEMORY_EXPONENT = 2.6          # memory per walker ∝ N^2.6 (README, fitted on N = 6…150)
RESULT_TAG = 'RESULT '
MIN_SIZE_SECONDS = 120.0       # the least time a timed size gets while the budget lasts
# Presets: the GPU run and the CPU smoke run (flags left unset take these).
PRESETS = {
    'gpu': dict(sizes='24,54,96,150', walkers=256, chunk='auto', substeps=10, timed_steps=3, width=64, layers=3,
                heads=4, kv_heads=2, experts=4, expert_hidden=32, determinants=4, train_n=54, train_steps=30,
                train_walkers=256, train_contexts=4, sweep_points=5, eval_walkers=128, eval_steps=10,
                burn_in=(5, 5, 10), budget_s=580.0, train_reserve_s=280.0),
    'cpu-smoke': dict(sizes='6', walkers=8, chunk=4, substeps=2, timed_steps=1, width=8, layers=1, heads=2,
                      kv_heads=1, experts=2, expert_hidden=8, determinants=1, train_n=6, train_steps=2,
                      train_walkers=8, train_contexts=2, sweep_points=5, eval_walkers=8, eval_steps=4,
                      burn_in=(4, 4, 8), budget_s=900.0, train_reserve_s=300.0),
}
NETWORK_FLAGS = ('width', 'layers', 'heads', 'kv_heads', 'experts', 'expert_hidden', 'determinants')


# ----- flags -----

def _chunk(text):
    if text == 'auto':
        return text
    return positive_int(text)


def parse_args(argv=None):
    """Parses and validates the flags; exits with status 2 on a bad one (nothing started or compiled)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='runs/gpu_benchmark', help='output directory')
    p.add_argument('--cpu-smoke', action='store_true',
                   help='tiny sizes on the CPU (defaults from the cpu-smoke preset; explicit flags still win)')
    p.add_argument('--sizes', default=None, help='timed electron numbers, e.g. 24,54,96,150 or 6 (even N ≤ 200)')
    p.add_argument('--walkers', type=positive_int, default=None, help='walkers of each timed step (gpu: 256)')
    p.add_argument('--chunk', type=_chunk, default=None,
                   help="walkers per micro-batch: 'auto' (fit --memory-fraction of the device) or an integer")
    p.add_argument('--memory-fraction', type=positive_float, default=0.5,
                   help="share of device memory the 'auto' chunk may fill (0 < f ≤ 1)")
    p.add_argument('--substeps', type=positive_int, default=None, help='MCMC sub-steps per step (gpu: 10)')
    p.add_argument('--timed-steps', type=positive_int, default=None, help='timed steps after compilation (gpu: 3)')
    net = p.add_argument_group('network (QERNEL; gpu defaults = QernelConfig defaults)')
    net.add_argument('--width', type=positive_int, default=None)
    net.add_argument('--layers', type=positive_int, default=None)
    net.add_argument('--heads', type=positive_int, default=None)
    net.add_argument('--kv-heads', type=positive_int, default=None)
    net.add_argument('--experts', type=positive_int, default=None)
    net.add_argument('--expert-hidden', type=positive_int, default=None)
    net.add_argument('--determinants', type=positive_int, default=None)
    train = p.add_argument_group('training (examples/moire_transition.py)')
    train.add_argument('--no-train', action='store_true', help='timing only')
    train.add_argument('--no-timing', action='store_true', help='training only')
    train.add_argument('--train-n', type=positive_int, default=None, help='N of the training run (gpu: 54)')
    train.add_argument('--train-steps', type=int_at_least(2, 'the driver needs at least two steps'), default=None,
                       help='training steps (≥ 2; gpu: 30)')
    train.add_argument('--train-walkers', type=positive_int, default=None, help='total training walkers (gpu: 256)')
    train.add_argument('--train-contexts', type=positive_int, default=None, help='λ per block (gpu: 4)')
    train.add_argument('--train-lam-range', type=float, nargs=2, default=(0.6, 1.6), help='training λ interval')
    train.add_argument('--sweep-points', type=positive_int, default=None, help='λ sweep points (≥ 5; gpu: 5)')
    train.add_argument('--eval-walkers', type=positive_int, default=None, help='sweep walkers (gpu: 128)')
    train.add_argument('--eval-steps', type=positive_int, default=None, help='sweep measurement calls (gpu: 10)')
    p.add_argument('--budget-s', type=positive_float, default=None,
                   help='wall-clock budget of the whole run (gpu: 580)')
    p.add_argument('--train-reserve-s', type=positive_float, default=None,
                   help='seconds of the budget kept for training (gpu: 280)')
    p.add_argument('--worker', default=None, help=argparse.SUPPRESS)  # internal: one measurement (JSON job)
    args = p.parse_args(argv)
    if args.worker is not None:
        return args
    return validate_args(args, p)


def validate_args(args, parser):
    """Fills the preset's defaults and checks every flag (plain Python; the driver's parser for training)."""
    preset = PRESETS['cpu-smoke' if args.cpu_smoke else 'gpu']
    for name, value in preset.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    from hamiltonians.moire import MoireSystem  # numpy only here: no JAX backend starts in this process
    system = MoireSystem()
    args.size_list = check(parser, parse_range, args.sizes, int, '--sizes', minimum=1, name='N')
    for n in args.size_list:
        try:
            system.context(n, 0, lam=1.0)
            system.supercell(n)
        except ValueError as err:
            parser.error(f'--sizes: bad N {n} in {args.sizes!r} ({err})')
    if not 0 < args.memory_fraction <= 1:
        parser.error(f"--memory-fraction: bad value '{args.memory_fraction:g}' (expected 0 < f ≤ 1)")
    if isinstance(args.chunk, int) and args.chunk > args.walkers:
        parser.error(f"--chunk: bad value '{args.chunk}' (larger than --walkers = {args.walkers})")
    if args.heads % args.kv_heads:
        parser.error(f"--kv-heads: bad value '{args.kv_heads}' (must divide --heads = {args.heads})")
    if args.width % args.heads:
        parser.error(f"--width: bad value '{args.width}' (must be a multiple of --heads = {args.heads})")
    check(parser, _qernel_config, args, max(args.size_list))
    check(parser, parse_interval, args.train_lam_range, '--train-lam-range', minimum=0.0, name='λ')
    if args.no_train and args.no_timing:
        parser.error("--no-timing: bad value 'True' (with --no-train there is nothing left to run)")
    if args.train_reserve_s >= args.budget_s and not (args.no_train or args.no_timing):
        parser.error(f"--train-reserve-s: bad value '{args.train_reserve_s:g}' (must be below --budget-s = "
                     f"{args.budget_s:g} to leave time for the timing part)")
    if not args.no_train:
        import moire_transition  # the driver validates its own flags (plain Python, nothing compiles)
        driver_argv = train_argv(args, chunk=args.chunk if isinstance(args.chunk, int) else 1)
        try:
            moire_transition.parse_args(driver_argv)
        except SystemExit as stop:
            if stop.code:
                parser.error('the training flags (--train-*, --sweep-points, --eval-*, network) are rejected by '
                             'examples/moire_transition.py (its message is above)')
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f'--out: bad path {args.out!r} (exists and is not a directory)')
    return args


def _qernel_config(args, n):
    from ansatz.qernel import QernelConfig
    return QernelConfig(width=args.width, num_layers=args.layers, num_heads=args.heads, num_kv_heads=args.kv_heads,
                        num_experts=args.experts, expert_hidden=args.expert_hidden,
                        num_determinants=args.determinants, max_orbitals=max(16, n))


def train_argv(args, chunk):
    """The driver's flags for the training run."""
    lo, hi = args.train_lam_range
    chunk_len, low, high = args.burn_in
    steps = args.train_steps
    return ['--run-dir', os.path.join(args.out, f'train_n{args.train_n}'), '--electrons', str(args.train_n),
            '--ansatz', 'qernel', '--width', str(args.width), '--layers', str(args.layers), '--heads', str(args.heads),
            '--kv-heads', str(args.kv_heads), '--experts', str(args.experts), '--expert-hidden',
            str(args.expert_hidden), '--determinants', str(args.determinants), '--optimizer', 'minsr',
            '--lam-range', repr(lo), repr(hi), '--stages', f'0:{args.train_contexts}',
            '--block-length', str(max(1, steps // 2)), '--steps', str(steps), '--walkers', str(args.train_walkers),
            '--substeps', str(args.substeps), '--chunk-size', str(chunk), '--checkpoint-every', str(max(1, steps // 2)),
            '--sweep-points', str(args.sweep_points), '--eval-walkers', str(args.eval_walkers),
            '--eval-steps', str(args.eval_steps), '--burn-in', str(chunk_len), str(low), str(high)]


# ----- worker side: one timed size in a fresh process -----

def auto_chunk(n, walkers, memory_bytes, fraction):
    """Largest power of two ≤ ``walkers`` whose estimated step memory fits ``fraction · memory_bytes``."""
    per_walker = BYTES_PER_WALKER_150 * (n / 150.0) ** MEMORY_EXPONENT
    fit = max(1.0, fraction * memory_bytes / per_walker)
    return int(min(walkers, 2 ** int(math.floor(math.log2(fit)))))


def _device_memory(jax):
    stats = jax.devices()[0].memory_stats() or {}
    if stats.get('bytes_limit'):
        return float(stats['bytes_limit']), stats
    return float(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')), stats


def run_worker(job):
    """Compiles and times the minSR step of one N; returns a JSON-able dict."""
    import resource
    import statistics

    import jax
    jax.config.update('jax_enable_x64', True)
    from qvmc.runtime import enable_compilation_cache
    enable_compilation_cache(job['cache'])  # the AOT compile below is then reused by the jitted step
    from ansatz.qernel import QernelConfig
    from ansatz.registry import make_ansatz
    from hamiltonians.moire import MoireSystem
    from qvmc import VMC, VMCConfig, natgrad
    from qvmc.scores import num_params

    n, walkers = job['n'], job['walkers']
    memory_bytes, _ = _device_memory(jax)
    chunk = job['chunk'] if job['chunk'] != 'auto' else auto_chunk(n, walkers, memory_bytes, job['memory_fraction'])
    out = {'N': n, 'walkers': walkers, 'chunk': chunk, 'substeps': job['substeps'], 'backend': jax.default_backend(),
           'device': str(jax.devices()[0].device_kind), 'device_memory_gb': memory_bytes / 1e9}
    system = MoireSystem()
    net = QernelConfig(**job['network'], max_orbitals=max(16, n))
    wavefunction = make_ansatz('qernel', net, lattice=system.network_lattice)
    config = VMCConfig(num_walkers=walkers, mcmc_substeps=job['substeps'], chunk_size=chunk, network_dtype='float32',
                       sampler='rwm')
    vmc = VMC(wavefunction, system, [system.context(n, 0, lam=1.0)], natgrad.minsr(0.05, 1e-3, max_norm=1e-2),
              config)
    state = vmc.init(jax.random.PRNGKey(0))
    out['parameters'] = int(num_params(state.params))
    key = jax.random.PRNGKey(1)
    start = time.perf_counter()
    try:
        memory = vmc._step.lower(key, state).compile().memory_analysis()  # the jitted pure step, compiled AOT
        out['xla_step_bytes'] = int(memory.argument_size_in_bytes + memory.output_size_in_bytes
                                    + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
    except Exception as err:  # noqa: BLE001  (memory analysis is optional on some backends)
        if _is_oom(err):
            raise
        out['xla_step_bytes'] = None
    out['compile_s'] = time.perf_counter() - start
    start = time.perf_counter()
    state, info = vmc.step(key, state)
    jax.block_until_ready(info)
    out['first_step_s'] = time.perf_counter() - start
    timings = []
    for t in range(job['timed_steps']):
        start = time.perf_counter()
        state, info = vmc.step(jax.random.fold_in(key, t + 1), state)
        jax.block_until_ready(info)
        timings.append(time.perf_counter() - start)
    out['step_s'] = statistics.median(timings)
    out['ms_per_walker'] = 1e3 * out['step_s'] / walkers
    out['energy_per_electron'] = float(info.loss) / n
    _, stats = _device_memory(jax)
    out['device_peak_bytes'] = stats.get('peak_bytes_in_use')
    out['max_rss_bytes'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out['status'] = 'ok'
    return out


def _is_oom(err):
    text = str(err)
    return 'RESOURCE_EXHAUSTED' in text or 'Out of memory' in text or 'out of memory' in text


def worker_main(job_text):
    job = json.loads(job_text)
    try:
        result = run_worker(job)
    except Exception as err:  # noqa: BLE001  (reported to the parent, which retries on OOM)
        result = {'N': job['n'], 'walkers': job['walkers'], 'chunk': job['chunk'],
                  'status': 'oom' if _is_oom(err) else 'error', 'error': f'{type(err).__name__}: {str(err)[:500]}'}
    print(RESULT_TAG + json.dumps(result), flush=True)


# ----- parent side -----

def child_env(args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    if args.cpu_smoke:
        env.update(JAX_PLATFORMS='cpu', JAX_DISABLE_MOST_OPTIMIZATIONS='1')
        if CPU_XLA_FLAGS not in env.get('XLA_FLAGS', ''):
            env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' ' + CPU_XLA_FLAGS).strip()
    return env


def run_process(cmd, env, timeout, log_path):
    """Runs ``cmd`` with its output in ``log_path``; kills its process group at ``timeout``. Returns
    ``(returncode or None on timeout, seconds)``."""
    start = time.time()
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    return code, time.time() - start


def _result_from_log(path):
    with open(path) as f:
        lines = [line for line in f if line.startswith(RESULT_TAG)]
    return json.loads(lines[-1][len(RESULT_TAG):]) if lines else None


def time_sizes(args, env, deadline):
    """Part 1: one process per N (smallest first), OOM retries with half the chunk; rows of ``timing.csv``."""
    rows, sizes = [], sorted(args.size_list)
    network = {'width': args.width, 'num_layers': args.layers, 'num_heads': args.heads, 'num_kv_heads': args.kv_heads,
               'num_experts': args.experts, 'expert_hidden': args.expert_hidden,
               'num_determinants': args.determinants}
    for i, n in enumerate(sizes):
        chunk, attempt = args.chunk, 0
        while True:
            left = deadline - time.time()
            weights = [m + 50 for m in sizes[i:]]
            # Larger N get a larger share, every size at least MIN_SIZE_SECONDS (start-up and compile);
            # time a size does not use rolls over to the next ones.
            timeout = max(left * weights[0] / sum(weights), min(left, MIN_SIZE_SECONDS))
            if timeout < 20:
                rows.append({'N': n, 'walkers': args.walkers, 'chunk': chunk, 'status': 'skipped (budget)'})
                break
            job = {'n': n, 'walkers': args.walkers, 'chunk': chunk, 'substeps': args.substeps,
                   'timed_steps': args.timed_steps, 'network': network, 'memory_fraction': args.memory_fraction,
                   'cache': None}  # qvmc.runtime's persistent cache ($QVMC_COMPILATION_CACHE)
            log = os.path.join(args.out, f'timing_n{n}' + (f'_retry{attempt}' if attempt else '') + '.log')
            code, seconds = run_process([sys.executable, os.path.abspath(__file__), '--worker', json.dumps(job)],
                                        env, timeout, log)
            row = _result_from_log(log) or {'N': n, 'walkers': args.walkers, 'chunk': chunk,
                                            'status': 'timeout' if code is None else 'error',
                                            'error': f'exit status {code}; see {log}'}
            row['process_s'] = round(seconds, 1)
            print(_row_text(row), flush=True)
            if row['status'] == 'oom' and isinstance(row.get('chunk'), int) and row['chunk'] > 1:
                chunk, attempt = row['chunk'] // 2, attempt + 1
                continue
            rows.append(row)
            break
    return rows


def _row_text(row):
    if row.get('status') != 'ok':
        return f"N = {row['N']}: {row.get('status')} {row.get('error', '')}"
    peak = row.get('device_peak_bytes') or row.get('max_rss_bytes')
    return (f"N = {row['N']}: {row['step_s']:.3f} s/step ({row['ms_per_walker']:.2f} ms/walker, {row['walkers']} "
            f"walkers, chunk {row['chunk']}), compile {row['compile_s']:.0f} s, XLA step "
            f"{(row.get('xla_step_bytes') or 0) / 1e9:.2f} GB, peak {peak / 1e9:.2f} GB, {row['parameters']} params")


def train(args, env, deadline, rows):
    """Part 2: the driver at N = ``--train-n``; the chunk of that N's timing row if it ran, else ``--chunk`` or
    the estimate for an 80 GB device."""
    timed = [r for r in rows if r.get('N') == args.train_n and r.get('status') == 'ok']
    if timed:
        chunk = timed[0]['chunk']
    elif isinstance(args.chunk, int):
        chunk = args.chunk
    else:
        chunk = auto_chunk(args.train_n, args.train_walkers, 80e9, args.memory_fraction)
    cmd = [sys.executable, os.path.join(ROOT, 'examples', 'moire_transition.py')] + train_argv(args, chunk)
    log = os.path.join(args.out, f'train_n{args.train_n}.log')
    print('training: ' + ' '.join(cmd[1:]), flush=True)
    code, seconds = run_process(cmd, env, deadline - time.time(), log)
    run_dir = os.path.join(args.out, f'train_n{args.train_n}')
    expected = ['checkpoint.qvmc', 'history.csv', 'sweep/energies.csv', 'sweep/density.csv']
    written = {name: os.path.exists(os.path.join(run_dir, name)) for name in expected + ['sweep/order_parameters.csv']}
    status = 'ok' if code == 0 and all(written[name] for name in expected) else (
        'timeout' if code is None else f'error (exit status {code})')
    print(f'training {status} in {seconds:.0f} s (chunk {chunk}); log {log}', flush=True)
    return {'status': status, 'seconds': round(seconds, 1), 'chunk': chunk, 'run_dir': run_dir, 'written': written}


def main(argv=None):
    args = parse_args(argv)
    if args.worker is not None:
        worker_main(args.worker)
        return 0
    start = time.time()
    deadline = start + args.budget_s
    os.makedirs(args.out, exist_ok=True)
    env = child_env(args)
    rows = []
    if not args.no_timing:
        timing_deadline = deadline - (0 if args.no_train else args.train_reserve_s)
        rows = time_sizes(args, env, timing_deadline)
        import pandas as pd
        pd.DataFrame(rows).to_csv(os.path.join(args.out, 'timing.csv'), index=False)
    training = None if args.no_train else train(args, env, deadline, rows)
    summary = {'preset': 'cpu-smoke' if args.cpu_smoke else 'gpu', 'seconds': round(time.time() - start, 1),
               'timing': rows, 'training': training}
    with open(os.path.join(args.out, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1, default=str)
    print(f"done in {summary['seconds']:.0f} s; wrote {args.out}")
    failed = [r for r in rows if r.get('status') != 'ok'] + ([training] if training and training['status'] != 'ok'
                                                                else [])
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
