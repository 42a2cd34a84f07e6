"""Natural-gradient optimizers for VMC (SR, minSR, SPRING) behind one optax-like interface.

How a training loop calls it
----------------------------
Every optimizer here is an ``optax.GradientTransformationExtraArgs``: it sits in
``optax.chain`` next to clipping, schedules or ``optax.apply_if_finite``, and plain optax
optimizers need no wrapper (``optax.chain`` passes the extra arguments only to the
transformations that take them)::

    tx = optax.chain(natgrad.spring(learning_rate=schedule, diag_shift=1e-3, momentum=0.9, max_norm=1e-3),
                     optax.clip_by_global_norm(1.0))
    opt_state = tx.init(params)
    ...  # each step, for every context c = 0..C-1 (walkers may have different N):
    O_c = score_fn(params, walkers_c, values_c)       # [n_c, P]  (scores.make_score_fn)
    E_c = clipped local energies of context c          # [n_c]     (the ones in the gradient)
    scores, energies, ids = natgrad.stack_contexts([O_0, ...], [E_0, ...])
    g = natgrad.energy_gradient(scores, energies, ids, w)            # the VMC energy gradient
    updates, opt_state = tx.update(unravel(g), opt_state, params, scores=scores,
                                   local_energies=energies, context_ids=ids, context_weights=w)

``context_weights`` ``[C]`` (the weights of the per-context energies in the loss, e.g.
``1/C`` each) also fixes the number of contexts C through its static shape. The gradient
passed as ``updates`` is ignored by SR/minSR/SPRING (they form it from O and E); whether a
state needs scores at all is ``uses_scores(opt_state)`` (the training step computes O only
then). Nothing here is jitted; the training step jits the whole update.

Conventions
-----------
Rows s of context c (``n_c`` rows, weight ``w_c``; default ``w_c = 1/C``) are centred per
context and scaled::

    Ō_s = (O_s - mean_c O) · sqrt(w_c / n_c),     ē_s = (E_s - mean_c E) · sqrt(w_c / n_c)

(with ``normalize_energy_scale=True``, ē of context c is further divided by ``std_c(E)``).
Then the gradient of the loss ``L = Σ_c w_c ⟨E⟩_c`` is ``g = 2 Ōᵀē = Σ_c w_c · 2 cov_c(O, E)``
and the metric is ``S = ŌᵀŌ = Σ_c w_c cov_c(O, O)``. A step applies ``θ ← θ - lr · s · δ``
with the direction δ below and the norm-constraint factor ``s ≤ 1``:

* ``sr``:     ``(S + εI) δ = g`` in parameter space (dense Cholesky or CG).
* ``minsr``:  ``δ = Ōᵀ (ŌŌᵀ + εI)⁻¹ 2ē`` in sample space; identical to SR by the
  push-through identity ``(ŌᵀŌ + εI)⁻¹ Ōᵀ = Ōᵀ (ŌŌᵀ + εI)⁻¹``.
* ``spring``: ``δ_k = Ōᵀ (ŌŌᵀ + εI)⁻¹ (2ē - μ Ō δ_{k-1}) + μ δ_{k-1}`` (Goldshlager,
  Abrahamsen & Lin, "A Kaczmarz-inspired approach to accelerate the optimization of neural
  network wavefunctions", J. Comput. Phys. 516, 113351 (2024), arXiv:2401.10190). It is
  the minimiser of ``‖Ōδ - 2ē‖² + ε‖δ - μδ_{k-1}‖²``, i.e. in parameter space
  ``δ_k = μδ_{k-1} + (S + εI)⁻¹ (g - μ S δ_{k-1})``; μ = 0 is minSR. The paper's φ is δ/2
  (its ε̄ carries no factor 2); the recursion is linear, so only the learning rate differs
  by 2. δ_{k-1} is stored raw (before lr and norm constraint), as in the authors' code.

Mean-zero subtlety: after centring, the per-context indicator vectors ``1_c`` are null
vectors of ``ŌŌᵀ``; the diagonal shift ε > 0 already makes the kernel invertible. Following
SPRING, the kernel is further augmented by ``Σ_c 1_c 1_cᵀ / n_c`` (eigenvalue 1 on the
constants) and the solution ζ is projected to zero per-context mean. Both are exact no-ops
in exact arithmetic (the right-hand side has zero per-context mean and ``Ōᵀ 1_c = 0``);
they keep the constants from setting the conditioning when B ≤ P.

Norm constraint (``max_norm``): as in KFAC/FermiNet, δ is scaled by
``s = min(1, sqrt(max_norm / (lr² δᵀSδ)))`` so the Fisher norm of the applied step,
``lr² s² δᵀSδ = ‖lr s Ō δ‖²``, never exceeds ``max_norm``. While the constraint binds
(``s < 1``) the applied step is ``sqrt(max_norm)`` long in the Fisher norm whatever the learning
rate, so a learning-rate decay changes nothing then: decay ``max_norm`` with it (its Fisher norm
is squared: a step-length decay ``1/(1 + t/T)`` is ``max_norm / (1 + t/T)²``). Learning rate,
diagonal shift and ``max_norm`` accept an optax schedule (called with the state's int32 step
``count``, before it is incremented; the schedule's own dtype sets the lr precision) or a float.

All solves run in float64 (O is cast before any product, also for float32 networks;
enable ``jax_enable_x64``). minSR and SPRING cast, centre and multiply O in column chunks
(``qvmc.score_kernel``), so the float64 ``[B, P]`` copy of Ō is never formed. Updates come back
unraveled in the parameters' dtypes. A failed factorisation gives NaN updates, which
``apply_if_finite`` rejects.
"""

import math
import warnings
from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from qvmc import score_kernel
from qvmc.score_kernel import gram  # noqa: F401  (public here since the blocked Gram was added)
from qvmc.scores import make_unravel
from samplers.types import Array, Params

ScalarOrSchedule = Union[float, Callable[[Array], Array]]


class NaturalGradientInfo(NamedTuple):
    """Facts of the last update, for logging only (the next update does not read them)."""
    learning_rate: Array  # [] lr used
    diag_shift: Array  # [] ε used
    fisher_norm_sq: Array  # [] lr² δᵀSδ before the norm constraint
    norm_scale: Array  # [] the factor s ≤ 1 applied by the norm constraint


class NaturalGradientState(NamedTuple):
    """Optimizer state: step ``count`` (drives schedules), SPRING's previous δ [P] (float64;
    None for SR/minSR), and the last step's ``info`` (kept here because optax's
    ``update`` has no info output)."""
    count: Array
    previous_update: Optional[Array]
    info: NaturalGradientInfo


def uses_scores(opt_state: Any) -> bool:
    """True if ``opt_state`` (of any optax chain or wrapper) holds a natural-gradient state,
    i.e. the optimizer needs per-walker ``scores`` among its extra arguments."""
    return last_info(opt_state) is not None


def last_info(opt_state: Any) -> Optional[NaturalGradientInfo]:
    """The ``NaturalGradientInfo`` of the last update held in ``opt_state`` (of any optax chain or
    wrapper), or None without a natural gradient. ``norm_scale < 1`` means the Fisher-norm cap bound."""
    is_ng = lambda x: isinstance(x, NaturalGradientState)
    states = [x for x in jax.tree.leaves(opt_state, is_leaf=is_ng) if is_ng(x)]
    return states[0].info if states else None


def _weights(context_weights: Optional[Array], num_contexts: Optional[int]) -> Array:
    """The ``[C]`` float64 weights from ``context_weights`` or a legacy ``num_contexts`` (``1/C``)."""
    if context_weights is not None:
        weights = jnp.asarray(context_weights).astype(jnp.float64)
        if weights.ndim != 1:
            raise ValueError(f'context_weights must be a vector [C], got shape {weights.shape}.')
        return weights
    if num_contexts is None:
        raise ValueError('Pass context_weights [C] (e.g. jnp.full(C, 1 / C)) so the number of contexts is known.')
    return jnp.full((int(num_contexts),), 1.0 / int(num_contexts), jnp.float64)


def stack_contexts(scores: Sequence[Array], local_energies: Sequence[Array]) -> Tuple[Array, Array, Array]:
    """Stack per-context rows: ``O [B, P]``, ``E [B]`` and ``context_ids [B]`` (int32, c for
    rows of ``scores[c]``); B = Σ n_c. Contexts may come from walkers of different N."""
    ids = [jnp.full((o.shape[0],), c, jnp.int32) for c, o in enumerate(scores)]
    return jnp.concatenate(scores, axis=0), jnp.concatenate(local_energies, axis=0), jnp.concatenate(ids)


def center_by_context(scores: Array, local_energies: Array, context_ids: Array, num_contexts: Optional[int] = None,
                      context_weights: Optional[Array] = None,
                      normalize_energy_scale: bool = False) -> Tuple[Array, Array]:
    """Centred, weighted rows ``(Ō [B, P], ē [B])`` in float64 (see the module conventions).

    Args:
      scores: ``O [B, P]``, rows of all contexts stacked (any order).
      local_energies: ``E [B]``, the (clipped) energies used in the gradient.
      context_ids: ``[B]`` int, the context of each row, in ``[0, num_contexts)``.
      num_contexts: ``C`` (a Python int); may be None when ``context_weights`` is given.
      context_weights: ``[C]`` weights ``w_c`` of the per-context energies (default ``1/C``).
      normalize_energy_scale: divide ē of context c by ``std_c(E)`` (zero std: undivided).
    """
    centre, e_bar = score_kernel.centring(scores, local_energies, context_ids,
                                          _weights(context_weights, num_contexts), normalize_energy_scale)
    return centre(scores), e_bar


def energy_gradient(scores: Array, local_energies: Array, context_ids: Array, num_contexts: Optional[int] = None,
                    context_weights: Optional[Array] = None, normalize_energy_scale: bool = False) -> Array:
    """``g = 2 Ōᵀē = Σ_c w_c · 2 cov_c(O, E)`` as a float64 vector ``[P]``."""
    o_bar, e_bar = center_by_context(scores, local_energies, context_ids, num_contexts,
                                     context_weights, normalize_energy_scale)
    return 2.0 * o_bar.T @ e_bar


def max_norm_following(learning_rate: Callable[[Array], Array], peak: float, max_norm: float) -> Callable[[Array], Array]:
    """The Fisher-norm cap as a schedule that follows a learning-rate schedule: ``max_norm · (lr(t)/peak)²``.

    While the cap binds, the applied step is ``sqrt(max_norm)`` long in the Fisher norm whatever the
    learning rate, so decaying the learning rate alone would leave the step unchanged; decaying the
    cap with the square of the learning-rate ratio makes the step follow the schedule. The drivers
    and benchmarks use it with their learning-rate schedules.

    Args:
      learning_rate: ``count -> lr`` (e.g. an optax schedule).
      peak: the learning rate at which the cap equals ``max_norm`` (> 0).
      max_norm: the cap at the peak (> 0).
    """
    if not callable(learning_rate):
        raise ValueError(f'max_norm_following needs a learning-rate schedule (a callable), got {learning_rate!r}.')
    for name, value in (('peak', peak), ('max_norm', max_norm)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f'max_norm_following: {name} must be a finite number > 0, got {value!r}.')
    peak, max_norm = float(peak), float(max_norm)
    return lambda count: max_norm * (learning_rate(count) / peak) ** 2


def _schedule(value: ScalarOrSchedule, name: str, allow_zero: bool) -> Callable[[Array], Array]:
    if callable(value):
        return value
    value = float(value)
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f'{name} must be {">= 0" if allow_zero else "> 0"} (or a schedule), got {value}.')
    return lambda count: value


def _check_x64(name: str) -> None:
    if not jax.config.read('jax_enable_x64'):
        warnings.warn(f'{name}: jax_enable_x64 is off, so the float64 solves fall back to float32; '
                      "call jax.config.update('jax_enable_x64', True) at start-up.", stacklevel=3)


def _sample_space_solve(kernel0, rhs, ids, num_contexts, shift):
    """``ζ = (ŌŌᵀ + εI + Σ_c 1_c1_cᵀ/n_c)⁻¹ rhs`` from ``kernel0 = ŌŌᵀ``, projected to zero per-context mean."""
    counts = jnp.maximum(jax.ops.segment_sum(jnp.ones_like(rhs), ids, num_segments=num_contexts), 1.0)
    same = (ids[:, None] == ids[None, :]).astype(rhs.dtype) / counts[ids][None, :]
    kernel = kernel0 + shift * jnp.eye(rhs.shape[0], dtype=rhs.dtype) + same
    zeta = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(kernel, lower=True), rhs)
    return zeta - (jax.ops.segment_sum(zeta, ids, num_segments=num_contexts) / counts)[ids]


def _parameter_space_solve(o_bar, rhs, shift, solver, cg_tol, cg_maxiter):
    """``x = (ŌᵀŌ + εI)⁻¹ rhs`` by dense Cholesky or matrix-free CG."""
    if solver == 'cg':
        matvec = lambda v: o_bar.T @ (o_bar @ v) + shift * v
        return jax.scipy.sparse.linalg.cg(matvec, rhs, tol=cg_tol, maxiter=cg_maxiter)[0]
    metric = o_bar.T @ o_bar + shift * jnp.eye(rhs.shape[0], dtype=rhs.dtype)
    return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(metric, lower=True), rhs)


def _natural_gradient(name: str, learning_rate: ScalarOrSchedule, diag_shift: ScalarOrSchedule,
                      space: str, momentum: float = 0.0, max_norm: Optional[ScalarOrSchedule] = None,
                      normalize_energy_scale: bool = False, solver: str = 'cholesky',
                      cg_tol: float = 1e-10, cg_maxiter: Optional[int] = None,
                      kernel_precision: str = 'float64') -> optax.GradientTransformationExtraArgs:
    """Shared builder; validates in Python, returns pure ``init``/``update``."""
    lr_fn = _schedule(learning_rate, 'learning_rate', allow_zero=True)
    shift_fn = _schedule(diag_shift, 'diag_shift', allow_zero=(space == 'parameter'))
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f'momentum must be in [0, 1], got {momentum}.')
    if max_norm is not None and not callable(max_norm) and not float(max_norm) > 0:
        raise ValueError(f'max_norm must be > 0, a schedule, or None (no constraint), got {max_norm}.')
    max_norm_fn = None if max_norm is None else _schedule(max_norm, 'max_norm', allow_zero=False)
    if solver not in ('cholesky', 'cg'):
        raise ValueError(f"solver must be 'cholesky' or 'cg', got {solver!r}.")
    if kernel_precision not in score_kernel.KERNEL_PRECISIONS:
        raise ValueError(f"kernel_precision must be one of {score_kernel.KERNEL_PRECISIONS}, got "
                         f"{kernel_precision!r}.")
    _check_x64(name)
    use_momentum = space == 'sample' and momentum > 0

    def init(params: Params) -> NaturalGradientState:
        zero = jnp.zeros((), jnp.float64)
        previous = jnp.zeros_like(ravel_pytree(params)[0], dtype=jnp.float64) if use_momentum else None
        info = NaturalGradientInfo(zero, zero, zero, zero)
        return NaturalGradientState(jnp.zeros((), jnp.int32), previous, info)

    def update(updates, state: NaturalGradientState, params: Params = None, *, scores: Array = None,
               local_energies: Array = None, context_ids: Array = None, context_weights: Optional[Array] = None,
               num_contexts: Optional[int] = None, **extra_args):
        del updates, extra_args  # the gradient is formed from O and E below; other extra args are not ours
        if params is None:
            raise ValueError(f'{name}.update needs params (for the shapes and dtypes of the updates).')
        if scores is None or local_energies is None or context_ids is None:
            raise ValueError(f'{name}.update needs the extra arguments scores [B, P], local_energies [B] and '
                             'context_ids [B] (the training step passes them; see qvmc.natgrad).')
        weights = _weights(context_weights, num_contexts)
        num_contexts = weights.shape[0]
        scores = jnp.asarray(scores)
        lr = jnp.asarray(lr_fn(state.count), jnp.float64)
        shift = jnp.asarray(shift_fn(state.count), jnp.float64)
        if space == 'parameter':
            o_bar, e_bar = center_by_context(scores, local_energies, context_ids, None, weights,
                                             normalize_energy_scale)
            delta = _parameter_space_solve(o_bar, 2.0 * o_bar.T @ e_bar, shift, solver, cg_tol, cg_maxiter)
            o_delta = o_bar @ delta
        else:
            # Ō is used only in column chunks (qvmc.score_kernel): its float64 copy is never formed.
            centre, e_bar = score_kernel.centring(scores, local_energies, context_ids, weights,
                                                  normalize_energy_scale)
            kernel0, o_previous = score_kernel.kernel(scores, centre, state.previous_update if use_momentum else None,
                                                      precision=kernel_precision)
            rhs = 2.0 * e_bar - momentum * o_previous if use_momentum else 2.0 * e_bar
            zeta = _sample_space_solve(kernel0, rhs, jnp.asarray(context_ids), num_contexts, shift)
            delta = score_kernel.transpose_product(scores, centre, zeta)
            o_delta = kernel0 @ zeta  # Ō Ōᵀ ζ
            if use_momentum:
                delta = delta + momentum * state.previous_update
                o_delta = o_delta + momentum * o_previous
        fisher_sq = lr ** 2 * jnp.sum(o_delta ** 2)
        scale = jnp.ones((), jnp.float64)
        if max_norm_fn is not None:
            cap = jnp.asarray(max_norm_fn(state.count), jnp.float64)
            capped = jnp.sqrt(cap / jnp.where(fisher_sq > 0, fisher_sq, 1.0))
            scale = jnp.where(fisher_sq > cap, capped, 1.0)
        updates = make_unravel(params)(-lr * scale * delta)
        new_state = NaturalGradientState(optax.safe_increment(state.count), delta if use_momentum else None,
                                         NaturalGradientInfo(lr, shift, fisher_sq, scale))
        return updates, new_state

    return optax.GradientTransformationExtraArgs(init, update)


def sr(learning_rate: ScalarOrSchedule, diag_shift: ScalarOrSchedule = 1e-3, *,
       max_norm: Optional[ScalarOrSchedule] = None, normalize_energy_scale: bool = False,
       solver: str = 'cholesky', cg_tol: float = 1e-10, cg_maxiter: Optional[int] = None) -> optax.GradientTransformationExtraArgs:
    """Stochastic reconfiguration: solve ``(S + εI) δ = g`` in parameter space.

    Args:
      learning_rate: float or optax schedule of the step count.
      diag_shift: ε ≥ 0, float or schedule (ε = 0 needs S positive definite, i.e. B > P).
      max_norm: cap on ``lr² δᵀSδ``, float or schedule (None: no constraint).
      normalize_energy_scale: divide each context's centred energies by their std.
      solver: ``'cholesky'`` (dense ``[P, P]``, float64; for small P) or ``'cg'`` (matrix-free
        conjugate gradients with ``Ōᵀ(Ō v) + εv``; stops at ``cg_tol`` relative residual or
        ``cg_maxiter`` iterations).
    """
    return _natural_gradient('sr', learning_rate, diag_shift, 'parameter', max_norm=max_norm,
                             normalize_energy_scale=normalize_energy_scale, solver=solver, cg_tol=cg_tol,
                             cg_maxiter=cg_maxiter)


def minsr(learning_rate: ScalarOrSchedule, diag_shift: ScalarOrSchedule = 1e-3, *,
          max_norm: Optional[ScalarOrSchedule] = None, normalize_energy_scale: bool = False,
          kernel_precision: str = 'float64') -> optax.GradientTransformationExtraArgs:
    """minSR: ``δ = Ōᵀ (ŌŌᵀ + εI)⁻¹ 2ē`` with a float64 ``[B, B]`` Cholesky solve (ε > 0).

    Equal to ``sr`` with the same ε (push-through identity); cheaper when B < P.
    ``kernel_precision='float32'`` forms the kernel ``ŌŌᵀ`` from float32 chunk products summed in
    float64 (``qvmc.score_kernel.kernel``): about half the cost of the ``B²P`` product on a CPU, with
    an error near 1e-5 of the kernel's mean diagonal, so ε must stay well above that (the default
    1e-3 does for scores of order one); factorisation and solve stay float64. If ε is too small the
    factorisation fails, the update is non-finite and the training step rejects it. Other arguments
    as in ``sr``.
    """
    return _natural_gradient('minsr', learning_rate, diag_shift, 'sample', max_norm=max_norm,
                             normalize_energy_scale=normalize_energy_scale, kernel_precision=kernel_precision)


def spring(learning_rate: ScalarOrSchedule, diag_shift: ScalarOrSchedule = 1e-3, momentum: float = 0.9, *,
           max_norm: Optional[ScalarOrSchedule] = None, normalize_energy_scale: bool = False,
           kernel_precision: str = 'float64') -> optax.GradientTransformationExtraArgs:
    """SPRING (Goldshlager, Abrahamsen & Lin 2024): minSR with the previous direction as prior.

    ``δ_k = Ōᵀ (ŌŌᵀ + εI)⁻¹ (2ē - μ Ō δ_{k-1}) + μ δ_{k-1}``, μ = ``momentum`` in [0, 1]
    (the paper uses values near 0.99); μ = 0 is minSR. ``kernel_precision`` as in ``minsr``;
    other arguments as in ``sr``.
    """
    return _natural_gradient('spring', learning_rate, diag_shift, 'sample', momentum=momentum,
                             max_norm=max_norm, normalize_energy_scale=normalize_energy_scale,
                             kernel_precision=kernel_precision)


def all_finite(tree) -> Array:
    """``[]`` bool: every floating leaf of ``tree`` is finite."""
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def apply_if_finite(params: Params, opt_state: Any, updates: Params,
                    new_opt_state: Any) -> Tuple[Params, Any, Array]:
    """``(params + updates, new_opt_state, True)`` if everything is finite, else the old ones.

    Checks every floating leaf of ``updates``, ``new_opt_state`` and the new parameters
    (overflow); a rejected step leaves parameters and optimizer state (its step count too)
    unchanged. Jit-safe: selection by ``jnp.where``; ``accepted`` is a bool array ``[]``. The
    training step's one guard against non-finite updates (``qvmc.step.make_train_step``).
    """
    new_params = optax.apply_updates(params, updates)
    accepted = all_finite(updates) & all_finite(new_opt_state) & all_finite(new_params)
    keep = lambda new, old: jnp.where(accepted, new, old)
    return jax.tree.map(keep, new_params, params), jax.tree.map(keep, new_opt_state, opt_state), accepted
