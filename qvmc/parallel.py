"""Data parallelism over walkers with ``jax.sharding``; multi-host start-up, portable state, precision."""

# How it fits together (single process, any number of local devices):
#
#     mesh = parallel.make_mesh()                        # all devices, one axis 'walkers'
#     vmc = VMC(wavefunction, system, contexts, optimizer, config, mesh=mesh)
#     state = vmc.init(rng_key)                          # walkers sharded, the rest replicated
#     state, info = vmc.step(rng_key, state)             # jitted code is unchanged
#
# The jitted step is written for the global batch; XLA's GSPMD partitioner propagates the input
# shardings, so per-walker work (sampling, local energies, scores) runs on each device's walkers
# and every walker mean (energies, gradients, the minSR kernel ŌŌᵀ) becomes an all-reduce.
# Random numbers do not depend on the sharding: the sampler splits one key per walker and
# threefry values are defined by the key alone (``jax_threefry_partitionable``, on by default
# since JAX 0.5, only makes that computation local to each device). So 1 and 4 devices give the
# same walkers and energies up to the summation order of the reductions.
#
# Multi-host: every process runs the same program, calls ``distributed_initialize()`` first
# (before any other JAX call), builds the mesh over ``jax.devices()`` (all processes) and
# proceeds as above; ``gather_state`` collects a state for a checkpoint written by process 0.

import math
import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

WALKER_AXIS = 'walkers'

# Environment variables read by ``distributed_initialize`` (arguments override them).
COORDINATOR_ADDRESS_ENV = 'QVMC_COORDINATOR_ADDRESS'  # 'host:port' of process 0's coordinator service
NUM_PROCESSES_ENV = 'QVMC_NUM_PROCESSES'  # total number of processes
PROCESS_ID_ENV = 'QVMC_PROCESS_ID'  # this process, 0 .. num_processes - 1
LOCAL_DEVICE_IDS_ENV = 'QVMC_LOCAL_DEVICE_IDS'  # optional, e.g. '0,1': the local devices this process uses
DISTRIBUTED_ENV = 'QVMC_DISTRIBUTED'  # 'auto': let JAX detect the cluster (Slurm, Open MPI, Cloud TPU)

NETWORK_DTYPES = ('float32', 'float64')
_TRUE, _FALSE = ('1', 'auto', 'true', 'yes', 'on'), ('', '0', 'false', 'no', 'off')


def _int_env(environ: Mapping[str, str], name: str) -> Optional[int]:
    value = environ.get(name, '').strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f'{name} must be an integer, got {value!r}.') from err


def distributed_config(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
                       process_id: Optional[int] = None, local_device_ids: Optional[Sequence[int]] = None,
                       environ: Optional[Mapping[str, str]] = None) -> Optional[Dict[str, Any]]:
    """The keyword arguments for ``jax.distributed.initialize``, or None for a single process.

    Arguments win over the environment variables ``QVMC_COORDINATOR_ADDRESS``,
    ``QVMC_NUM_PROCESSES``, ``QVMC_PROCESS_ID`` and ``QVMC_LOCAL_DEVICE_IDS``. With a
    coordinator address, the number of processes and this process's id are required. Without
    one, ``QVMC_DISTRIBUTED=auto`` returns ``{}``: JAX then detects the cluster itself (Slurm,
    Open MPI, Cloud TPU); an unset ``QVMC_DISTRIBUTED`` means a single process.

    Raises:
      ValueError: incomplete or inconsistent settings (the message names the variable to set).
    """
    env = os.environ if environ is None else environ
    coordinator_address = coordinator_address or env.get(COORDINATOR_ADDRESS_ENV, '').strip() or None
    num_processes = _int_env(env, NUM_PROCESSES_ENV) if num_processes is None else int(num_processes)
    process_id = _int_env(env, PROCESS_ID_ENV) if process_id is None else int(process_id)
    if local_device_ids is None and env.get(LOCAL_DEVICE_IDS_ENV, '').strip():
        try:
            local_device_ids = [int(d) for d in env[LOCAL_DEVICE_IDS_ENV].split(',')]
        except ValueError as err:
            raise ValueError(f'{LOCAL_DEVICE_IDS_ENV} must be comma-separated integers, '
                             f'got {env[LOCAL_DEVICE_IDS_ENV]!r}.') from err
    if coordinator_address is None:
        if num_processes is not None or process_id is not None or local_device_ids is not None:
            raise ValueError(f'A multi-process run needs the coordinator address: set {COORDINATOR_ADDRESS_ENV} '
                             f"(e.g. 'node0:12345', the host of process 0) or pass coordinator_address.")
        mode = env.get(DISTRIBUTED_ENV, '').strip().lower()
        if mode in _FALSE:
            return None
        if mode in _TRUE:
            return {}
        raise ValueError(f"{DISTRIBUTED_ENV} must be 'auto' (let JAX detect the cluster) or unset, got {mode!r}.")
    if num_processes is None or process_id is None:
        raise ValueError(f'With a coordinator address set {NUM_PROCESSES_ENV} and {PROCESS_ID_ENV} too '
                         '(or pass num_processes and process_id).')
    if num_processes <= 0 or not 0 <= process_id < num_processes:
        raise ValueError(f'Need num_processes > 0 and 0 <= process_id < num_processes, '
                         f'got num_processes={num_processes}, process_id={process_id}.')
    config = {'coordinator_address': coordinator_address, 'num_processes': num_processes, 'process_id': process_id}
    if local_device_ids is not None:
        config['local_device_ids'] = list(local_device_ids)
    return config


def distributed_initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
                           process_id: Optional[int] = None, local_device_ids: Optional[Sequence[int]] = None,
                           environ: Optional[Mapping[str, str]] = None) -> bool:
    """Starts JAX's distributed runtime for a multi-host run (see ``distributed_config``).

    Call it on every process before any JAX computation. Importing ``qvmc`` already computes
    (BlackJAX builds arrays at import), so this must run before that import: either from
    ``qvmc/__init__.py`` (with the environment variables set, ``import qvmc`` starts the
    runtime) or by loading this file on its own. A single-process setting (nothing
    configured) does nothing, so the same script runs on a laptop. Calling it again after a
    successful start is a no-op.

    Returns:
      True if the distributed runtime is running (started now or before), False for a
      single-process run.
    """
    config = distributed_config(coordinator_address, num_processes, process_id, local_device_ids, environ)
    if config is None:
        return False
    if not jax.distributed.is_initialized():
        try:
            jax.distributed.initialize(**config)
        except RuntimeError as err:
            if 'must be called before' not in str(err):
                raise
            raise RuntimeError('qvmc.parallel.distributed_initialize() ran after JAX had started computing '
                               '(importing blackjax does). Run it before importing qvmc\'s samplers, '
                               'e.g. at the top of qvmc/__init__.py.') from err
    return True


def make_mesh(devices: Optional[Sequence[Any]] = None, axis_name: str = WALKER_AXIS) -> Mesh:
    """A one-axis mesh over ``devices`` (default: all devices of all processes) for walker sharding.

    The axis is of type ``Auto`` (GSPMD: the compiler propagates shardings through the
    unchanged, global-view step), not ``Explicit`` (``jax.make_mesh``'s default in this JAX).
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError('make_mesh needs at least one device.')
    return jax.make_mesh((len(devices),), (axis_name,), axis_types=(AxisType.Auto,), devices=devices)


def walker_axis(mesh: Mesh) -> str:
    """The name of the mesh axis that shards walkers (``'walkers'``, or the only axis)."""
    if WALKER_AXIS in mesh.axis_names:
        return WALKER_AXIS
    if len(mesh.axis_names) == 1:
        return mesh.axis_names[0]
    raise ValueError(f"Mesh axes {mesh.axis_names} have no '{WALKER_AXIS}' axis; build it with parallel.make_mesh.")


def num_shards(mesh: Optional[Mesh]) -> int:
    """How many pieces the walker axis is split into (1 without a mesh)."""
    return 1 if mesh is None else int(mesh.shape[walker_axis(mesh)])


def walker_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (walker) axis split over the mesh, other axes whole."""
    return NamedSharding(mesh, PartitionSpec(walker_axis(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def check_divisible(num_walkers: int, mesh: Optional[Mesh], what: str = 'num_walkers') -> None:
    """Raises ``ValueError`` unless ``num_walkers`` splits evenly over the mesh's devices."""
    n = num_shards(mesh)
    if num_walkers % n:
        suggestion = n * max(1, -(-num_walkers // n))
        raise ValueError(f'{what}={num_walkers} cannot be split evenly over the {n} devices of the mesh; '
                         f'use a multiple of {n} (e.g. {suggestion}) or a mesh over fewer devices.')


def _put(x, sharding: NamedSharding):
    """Places one leaf; non-array leaves (Python numbers, None) are returned unchanged."""
    if not isinstance(x, (jax.Array, np.ndarray, np.generic)):
        return x
    if jax.process_count() == 1 or (isinstance(x, jax.Array) and not x.is_fully_addressable):
        return jax.device_put(x, sharding)
    host = np.asarray(x)  # the same full value on every process (e.g. a loaded checkpoint)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_state(state, mesh: Mesh):
    """Walkers split along the mesh, everything else (parameters, optimizer state, step
    sizes) replicated; works on fresh, stepped, gathered or loaded (numpy) states.

    Args:
      state: a ``qvmc.state.TrainState`` (``params``, ``opt_state``, ``values``, ``step``,
        ``num_rejected`` and ``chains``, each with ``walkers [W, N, D]`` and ``step_size []``).
      mesh: from ``make_mesh``. In a multi-process run every process passes the same full
        state (e.g. the same seed, or the same checkpoint) and keeps its devices' part.

    Raises:
      ValueError: a context's walker count is not divisible by the number of devices.
    """
    walkers, whole = walker_sharding(mesh), replicated(mesh)
    chains = []
    for i, chain in enumerate(state.chains):
        check_divisible(int(np.shape(chain.walkers)[0]), mesh, f'walkers of context block {i}')
        chains.append(chain._replace(walkers=_put(chain.walkers, walkers), step_size=_put(chain.step_size, whole)))
    put = lambda tree: jax.tree.map(lambda a: _put(a, whole), tree)
    return state._replace(params=put(state.params), opt_state=put(state.opt_state), chains=tuple(chains),
                          values=put(state.values), step=put(state.step), num_rejected=put(state.num_rejected))


def to_host(x):
    """One array as a full host numpy array (a collective for arrays spread over processes)."""
    if not isinstance(x, jax.Array):
        return x
    if x.is_fully_addressable:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def gather_state(state):
    """Every array of ``state`` as a full host numpy array, for a checkpoint that any device
    count can resume (``shard_state`` re-splits it).

    In a multi-process run all processes must call it (it is a collective); then write the
    file from ``jax.process_index() == 0`` only.
    """
    return jax.tree.map(to_host, state)


def place_state(state, mesh: Optional[Mesh] = None, dtype: Optional[str] = None):
    """``cast_walkers`` (if ``dtype``) then ``shard_state`` (if ``mesh``); the identity otherwise."""
    if dtype is not None:
        state = cast_walkers(state, dtype)
    if mesh is not None:
        state = shard_state(state, mesh)
    return state


def check_dtype(dtype: Optional[str]) -> None:
    """Raises ``ValueError`` unless ``dtype`` is None or one of ``NETWORK_DTYPES``."""
    if dtype is not None and dtype not in NETWORK_DTYPES:
        raise ValueError(f'network dtype must be one of {NETWORK_DTYPES} or None (keep), got {dtype!r}.')


def cast_params(params, dtype: str):
    """Floating-point leaves of ``params`` cast to ``dtype`` (integer leaves untouched)."""
    check_dtype(dtype)
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, params)


def cast_walkers(state, dtype: str):
    """Walkers and step sizes of every walker block cast to ``dtype``; the network follows the walkers'
    dtype (see ``hamiltonians.system.make_log_psi``), while local-energy potentials, energy statistics,
    gradient sums and natural-gradient solves stay in float64 when ``jax_enable_x64`` is on."""
    check_dtype(dtype)
    chains = tuple(c._replace(walkers=c.walkers.astype(dtype), step_size=c.step_size.astype(dtype))
                   for c in state.chains)
    return state._replace(chains=chains)


def reduction_dtype():
    """float64 if ``jax_enable_x64`` is on (energy means and variances), else float32."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def _strided(xs, num_chunks: int):
    """``[c·n, ...] -> [n, c, ...]`` with chunk j holding rows ``j, j + n, j + 2n, ...``."""
    return jax.tree.map(lambda a: jnp.swapaxes(a.reshape((a.shape[0] // num_chunks, num_chunks) + a.shape[1:]),
                                               0, 1), xs)


def _unstrided(ys):
    """Inverse of ``_strided``: ``[n, c, ...] -> [c·n, ...]`` in the original row order."""
    return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1).reshape((-1,) + a.shape[2:]), ys)


def _split(xs, chunk_size):
    n = jax.tree.leaves(xs)[0].shape[0]
    num_chunks = n // chunk_size
    head = num_chunks * chunk_size
    return num_chunks, jax.tree.map(lambda a: a[:head], xs), (jax.tree.map(lambda a: a[head:], xs)
                                                              if head < n else None)


# energy_pass_size without a batch size on a CPU: about this many walkers × (coordinates)² per pass, rounded to a
# power of two in [4, 256]. A walker's forward-Laplacian tangents grow as (N·D) × N × width, so the walkers
# that fit in cache fall as 1/N². Measured optima (2-core AMD EPYC): QERNEL N = 6 at 64-128 walkers, Fermi
# Sets N = 10 at 16-32, QERNEL N = 24 and Fermi Sets N = 30 at 4 (of 4-64; 1.3x and 1.8x faster than 16).
CPU_ENERGY_WORKSET = 9216



def energy_pass_size(num_coords: int, num_walkers: int, batch_size: Optional[int] = None,
                     chunk_size: Optional[int] = None, backend: Optional[str] = None) -> Optional[int]:
    """Walkers per ``chunked_vmap`` pass of the local energies (the energy-pass policy).

    ``batch_size`` (``VMCConfig.energy_batch_size``) is used as given; without it, on a CPU
    (``backend``, default ``jax.default_backend()``, read at trace time) about
    ``CPU_ENERGY_WORKSET / num_coords²`` walkers, a power of two in [4, 256] adjusted to divide
    ``num_walkers``; on an accelerator all walkers at once. ``chunk_size`` (``VMCConfig.chunk_size``,
    the memory cap of every per-walker pass) caps the result. None: one pass.
    """
    batch = batch_size
    if batch is None and (backend or jax.default_backend()) == 'cpu':
        target = 2 ** min(8, max(2, round(math.log2(CPU_ENERGY_WORKSET / max(int(num_coords), 1) ** 2))))
        batch = _even_batch(int(num_walkers), target)
    if chunk_size is None:
        return batch
    return chunk_size if batch is None else min(int(batch), int(chunk_size))


def _even_batch(num_walkers: int, target: int) -> Optional[int]:
    """``num_walkers / k`` for the smallest ``k ≥ ⌈num_walkers / target⌉`` (up to 4× that) dividing
    ``num_walkers``; None (one pass) when ``num_walkers ≤ target`` or no such ``k`` exists."""
    if num_walkers <= target:
        return None
    least = -(-num_walkers // target)
    for passes in range(least, 4 * least + 1):
        if num_walkers % passes == 0:
            return num_walkers // passes
    return None


def chunked_vmap(fn: Callable, chunk_size: Optional[int]) -> Callable:
    """``vmap(fn)`` over the leading axis, ``chunk_size`` rows at a time, sharding-friendly.

    A sequential loop over chunks (memory of one chunk, result equal to ``vmap(fn)``) in
    which chunk j takes the strided rows ``j, j + n, ...`` rather than a contiguous block. With the rows sharded over D devices, each chunk
    then holds ``chunk_size / D`` rows of every device and the loop runs data-parallel
    without communication. (A contiguous chunk lives on one device: XLA all-gathers the
    walkers and every device computes every chunk.) No collectives at all when
    ``chunk_size`` is a multiple of D and divides the number of rows; otherwise the
    remainder rows are one extra vmapped call and XLA moves some data.
    """
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size <= 0):
        raise ValueError(f'chunk_size must be a positive int or None (no chunking), got {chunk_size!r}.')

    def mapped(xs):
        if chunk_size is None or chunk_size >= jax.tree.leaves(xs)[0].shape[0]:
            return jax.vmap(fn)(xs)
        num_chunks, head, tail = _split(xs, chunk_size)
        out = _unstrided(jax.lax.map(jax.vmap(fn), _strided(head, num_chunks)))
        if tail is not None:
            out = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), out, jax.vmap(fn)(tail))
        return out
    return mapped


def accumulate(fn: Callable, xs, chunk_size: Optional[int]):
    """``Σ_chunks fn(chunk)`` over strided chunks of the leading axis (see ``chunked_vmap``).

    Same contract as ``qvmc.scores.accumulate``: ``fn`` maps rows ``[c, ...]`` to a pytree of
    sums whose shape does not depend on c; equals ``fn(xs)`` up to summation order.
    """
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size <= 0):
        raise ValueError(f'chunk_size must be a positive int or None (no chunking), got {chunk_size!r}.')
    if chunk_size is None or chunk_size >= jax.tree.leaves(xs)[0].shape[0]:
        return fn(xs)
    num_chunks, head, tail = _split(xs, chunk_size)
    chunks = _strided(head, num_chunks)
    zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, jax.tree.map(lambda a: a[0], chunks)))
    total, _ = jax.lax.scan(lambda acc, chunk: (jax.tree.map(jnp.add, acc, fn(chunk)), None), zero, chunks)
    if tail is not None:
        total = jax.tree.map(jnp.add, total, fn(tail))
    return total
