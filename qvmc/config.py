"""``VMCConfig``: the settings of the training step, validated in Python before anything compiles."""

import dataclasses
import math
import numbers
from typing import Optional

import samplers
from hamiltonians.local_energy import KINETIC_METHODS
from qvmc import parallel


def check_int(name: str, value, minimum: int = 1, allow_none: bool = False) -> None:
    """Raises ``ValueError`` unless ``value`` is an integer ``>= minimum`` (or None if allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f'{name} must be an integer, got {value!r} ({type(value).__name__}).')
    if value < minimum:
        raise ValueError(f'{name} must be >= {minimum}, got {value}.')


def check_float(name: str, value, *, positive: bool = False, nonnegative: bool = False,
                open_unit: bool = False, allow_none: bool = False) -> None:
    """Raises ``ValueError`` unless ``value`` is a finite real number in the stated range."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f'{name} must be a number, got {value!r} ({type(value).__name__}).')
    if not math.isfinite(value):
        raise ValueError(f'{name} must be finite, got {value}.')
    if positive and not value > 0:
        raise ValueError(f'{name} must be > 0, got {value}.')
    if nonnegative and value < 0:
        raise ValueError(f'{name} must be >= 0, got {value}.')
    if open_unit and not 0.0 < value < 1.0:
        raise ValueError(f'{name} must be in (0, 1), got {value}.')


# VMCConfig.laplacian_sparsity=None: folx's sparse Jacobians (threshold 8) from this many electrons on. Measured
# (docs/results/scaling.md): Fermi Sets step 1.7-2x faster at N = 12-30, QERNEL local energy 1.4x at N = 24, no gain
# at N = 6; tracing the sparsity pattern adds several seconds to every compile, which small N does not repay.
SPARSE_LAPLACIAN_FROM_N = 12
SPARSE_LAPLACIAN_THRESHOLD = 8


@dataclasses.dataclass(frozen=True)
class VMCConfig:
    """Settings of the VMC step.

    Attributes:
      num_walkers: walkers per context.
      sampler: ``'rwm'``, ``'mala'`` or ``'hmc'`` (see ``samplers.make_kernel``).
      mcmc_substeps: MCMC transitions per walker between parameter updates.
      target_acceptance: step-size adaptation target (None: the sampler's default,
        0.5 for RWM, 0.57 for MALA).
      clip_scale: local energies are clipped to ``median ± clip_scale · mean|E - median|``
        (over the finite ones) in the gradient estimator only (energies reported are unclipped).
      kinetic_method: ``'folx'`` or ``'hessian'``.
      laplacian_sparsity: folx's ``sparsity_threshold`` (``hamiltonians.make_kinetic_energy``):
        intermediate Jacobians that depend on at most this many coordinates stay sparse (exact
        either way; 0: dense). None: automatic, ``SPARSE_LAPLACIAN_THRESHOLD`` (8) from
        ``SPARSE_LAPLACIAN_FROM_N`` (12) electrons on and dense below (see ``sparsity_for``).
      initial_step_size: proposal step in units of the system's length scale (raised to the
        sampler's ``step_size_power``: MALA's step is a diffusion time, length²).
      chunk_size: walkers per micro-batch for local energies, scores and gradients (None: all
        at once). Bounds memory independently of ``num_walkers``; results equal the unsplit
        computation up to summation order.
      energy_batch_size: walkers per pass of the local energies, the passes run in sequence.
        A CPU computes the forward Laplacian of a few walkers at a time faster than of all at
        once, because each walker's tangent arrays ([N·D, ...] per activation) then stay in
        cache: QERNEL at N = 6 and 1024 walkers 1.3× on two cores and 1.8× on one, Fermi Sets at
        N = 6-10 and 256 walkers 1.5-1.7× on two cores and 2.1-2.2× on one (benchmarks/README.md).
        None: automatic. On the CPU backend the walkers are split into equal passes of about
        ``parallel.CPU_ENERGY_WORKSET / (N·D)²`` walkers (``parallel.energy_pass_size``: a power of
        two in [4, 256], 64 at N·D = 12, 4 from N·D = 40 on), a number of passes that divides
        the walker count so that no remainder pass compiles a second program (no split if none does); on accelerators all walkers go at once. A
        smaller ``chunk_size`` takes precedence. Each walker's energy is computed alone either
        way, so results agree to rounding.
      normalize_energy_scale: divide each context's centred local energies by their standard
        deviation in the gradient, so contexts with large energies do not dominate the update
        (optax path; natural-gradient optimizers take their own ``normalize_energy_scale``).
      network_dtype: ``'float32'`` or ``'float64'``: parameters and walkers are cast to it by
        ``VMC.init``/``reassign`` and the network runs in it, while potentials, energy
        statistics, gradient sums and natural-gradient solves stay float64 under
        ``jax_enable_x64`` (None: keep the dtypes of the inputs; see ``qvmc.parallel``).
      reseed_bad_walkers: walkers whose position or log|ψ| is non-finite after sampling are
        replaced by copies of healthy walkers of the same context (they decorrelate in the
        following sub-steps); walkers with a non-finite local energy are left out of that
        step's estimates either way (counted as ``num_bad_walkers``).
    """
    num_walkers: int = 256
    sampler: str = 'rwm'
    mcmc_substeps: int = 10
    target_acceptance: Optional[float] = None
    clip_scale: float = 5.0
    kinetic_method: str = 'folx'
    laplacian_sparsity: Optional[int] = None
    initial_step_size: float = 0.5
    chunk_size: Optional[int] = None
    energy_batch_size: Optional[int] = None
    normalize_energy_scale: bool = False
    network_dtype: Optional[str] = None
    reseed_bad_walkers: bool = True

    def __post_init__(self):
        check_int('VMCConfig.num_walkers', self.num_walkers)
        check_int('VMCConfig.mcmc_substeps', self.mcmc_substeps)
        check_int('VMCConfig.chunk_size', self.chunk_size, allow_none=True)
        check_int('VMCConfig.energy_batch_size', self.energy_batch_size, allow_none=True)
        check_int('VMCConfig.laplacian_sparsity', self.laplacian_sparsity, allow_none=True, minimum=0)
        if self.sampler not in samplers.SAMPLERS:
            raise ValueError(f'VMCConfig.sampler must be one of {samplers.SAMPLERS}, got {self.sampler!r}.')
        check_float('VMCConfig.target_acceptance', self.target_acceptance, open_unit=True, allow_none=True)
        check_float('VMCConfig.clip_scale', self.clip_scale, positive=True)
        check_float('VMCConfig.initial_step_size', self.initial_step_size, positive=True)
        if self.kinetic_method not in KINETIC_METHODS:
            raise ValueError(f'VMCConfig.kinetic_method must be one of {KINETIC_METHODS}, '
                             f'got {self.kinetic_method!r}.')
        for name in ('normalize_energy_scale', 'reseed_bad_walkers'):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f'VMCConfig.{name} must be True or False, got {getattr(self, name)!r}.')
        parallel.check_dtype(self.network_dtype)

    def sparsity_for(self, num_electrons: int) -> int:
        """folx's sparsity threshold for the local energies of ``num_electrons`` electrons."""
        if self.laplacian_sparsity is not None:
            return int(self.laplacian_sparsity)
        return SPARSE_LAPLACIAN_THRESHOLD if num_electrons >= SPARSE_LAPLACIAN_FROM_N else 0

    def energy_chunk(self, num_coords: int, num_walkers: int) -> Optional[int]:
        """Walkers per pass of the local energies of ``num_walkers`` walkers with ``num_coords`` =
        N·D coordinates on the current default backend: ``parallel.energy_pass_size`` with this
        config's ``energy_batch_size`` and ``chunk_size``; None: all at once."""
        return parallel.energy_pass_size(num_coords, num_walkers, self.energy_batch_size, self.chunk_size)
