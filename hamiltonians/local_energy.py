"""Local-energy factories: kinetic energy by folx's forward Laplacian or by a Hessian loop."""

import warnings
from typing import Any, Callable, Dict, Tuple

import folx
import jax
import jax.numpy as jnp
import numpy as np

from samplers.types import Array, ContextValues, Params

KINETIC_METHODS = ('folx', 'hessian')


_SPARSE_FAILURES = set()


def _warn_sparse_failed(err: Exception) -> None:
    """Warns once per kind of failure that folx's sparse tracing failed and the dense path is used."""
    what = f'{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ""}'
    if what not in _SPARSE_FAILURES:
        _SPARSE_FAILURES.add(what)
        warnings.warn(f'folx could not trace this network with sparse Jacobians ({what}); using the dense '
                      'forward Laplacian (exact as well, slower at large N). Set VMCConfig(laplacian_sparsity=0) '
                      'to silence this.', RuntimeWarning, stacklevel=3)


def _check_sparsity_threshold(threshold) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or threshold < 0:
        raise ValueError(f'sparsity_threshold must be an integer >= 0 (0: dense forward Laplacian), '
                         f'got {threshold!r}.')


def make_kinetic_energy(log_psi_fn: Callable[[Array], Array],
                        method: str = 'folx', sparsity_threshold: int = 0) -> Callable[[Array], Array]:
    """Kinetic energy ``-½ ∇²ψ / ψ`` of a real wavefunction at one walker.

    Uses ``∇²ψ/ψ = ∇² log|ψ| + |∇ log|ψ||²``, valid away from the nodes.

    Args:
      log_psi_fn: ``x [N, D] -> log|ψ(x)|`` (a scalar) for one walker.
      method: ``'folx'`` (forward Laplacian, one pass carrying value, gradient and
        Laplacian) or ``'hessian'`` (reference path: reverse-mode gradient, then one
        forward-mode JVP per coordinate, i.e. the Hessian diagonal).
      sparsity_threshold: folx only: intermediate Jacobians that depend on at most this many
        input coordinates are carried sparse (exact either way; ``0``: all dense). Per-electron
        parts of a network depend on D coordinates, pair parts on 2D, so ``8`` keeps them
        sparse in 2D. The Fermi Sets local energy at N = 12-30 takes half the time with 8,
        QERNEL's at N = 24 about 0.7 of it; compiling takes a few seconds longer
        (``docs/results/scaling.md``). ``VMCConfig.laplacian_sparsity`` chooses it by N.

    Returns:
      ``kinetic(x [N, D]) -> []``.
    """
    if method not in KINETIC_METHODS:
        raise ValueError(f'Unknown kinetic method {method!r}; choose one of {KINETIC_METHODS}.')
    _check_sparsity_threshold(sparsity_threshold)

    if method == 'folx':
        dense_fn = folx.forward_laplacian(log_psi_fn, sparsity_threshold=0, disable_jit=True)
        sparse_fn = folx.forward_laplacian(log_psi_fn, sparsity_threshold=int(sparsity_threshold),
                                           disable_jit=True) if sparsity_threshold else None

        def laplacian_fn(x):
            if sparse_fn is None:
                return dense_fn(x)
            try:
                return sparse_fn(x)
            except Exception as err:  # noqa: BLE001 -- a folx tracing failure; the dense path is exact too
                _warn_sparse_failed(err)
                return dense_fn(x)

        def kinetic(x: Array) -> Array:
            out = laplacian_fn(x)
            grad = out.jacobian.dense_array.reshape(-1)  # [N * D]
            return -0.5 * (out.laplacian + jnp.sum(grad**2))
        return kinetic

    def kinetic(x: Array) -> Array:
        x_flat = x.reshape(-1)
        n = x_flat.shape[0]
        grad_fn = jax.grad(lambda y: log_psi_fn(y.reshape(x.shape)))
        eye = jnp.eye(n, dtype=x.dtype)

        def body(i, acc):
            g, dg = jax.jvp(grad_fn, (x_flat,), (eye[i],))
            return acc[0] + dg[i], g
        laplacian, grad = jax.lax.fori_loop(0, n, body, (jnp.zeros((), x.dtype), jnp.zeros_like(x_flat)))
        return -0.5 * (laplacian + jnp.sum(grad**2))
    return kinetic


def make_local_energy(
    log_psi_fn: Callable[[Params, Array, ContextValues], Array],
    potential_fn: Callable[[Array, ContextValues], Dict[str, Array]],
    kinetic_method: str = 'folx',
    kinetic_scale: float = 1.0,
    sparsity_threshold: int = 0,
) -> Callable[[Params, Array, ContextValues], Tuple[Array, Dict[str, Array]]]:
    """Builds ``local_energy(params, x, values) -> (E_L [], components)`` for one walker.

    Args:
      log_psi_fn: ``(params, x [N, D], values) -> log|ψ|``.
      potential_fn: ``(x [N, D], values) -> {name: energy []}``, e.g.
        ``QuantumDot.potential_components``.
      kinetic_method: see ``make_kinetic_energy``.
      kinetic_scale: the kinetic operator is ``kinetic_scale · (-½∇²)``: 1 in Hartree
        atomic units, ``ħ²/m*`` for a system in other units (e.g. meV·nm² for the moiré
        system, where ``-ħ²/2m* ∇² = (ħ²/m*)(-½∇²)``).
      sparsity_threshold: folx's sparse Jacobians (see ``make_kinetic_energy``).

    Returns:
      A pure function for one walker; ``components`` holds ``'kinetic'`` plus every
      potential term, and they sum to ``E_L``. vmap it over walkers. A potential term named
      ``'kinetic_correction'`` (the padding rows of ``hamiltonians.padding``) is added to
      ``'kinetic'`` instead of being reported.
    """
    if kinetic_method not in KINETIC_METHODS:
        raise ValueError(f'Unknown kinetic method {kinetic_method!r}; choose one of {KINETIC_METHODS}.')
    if not kinetic_scale > 0:
        raise ValueError(f'kinetic_scale must be > 0, got {kinetic_scale}.')
    _check_sparsity_threshold(sparsity_threshold)

    def local_energy(params: Params, x: Array, values: ContextValues):
        kinetic_fn = make_kinetic_energy(lambda y: log_psi_fn(params, y, values), kinetic_method,
                                         sparsity_threshold)
        components = {'kinetic': kinetic_scale * kinetic_fn(x)}
        components.update(potential_fn(x, values))
        correction = components.pop('kinetic_correction', None)
        if correction is not None:
            components['kinetic'] = components['kinetic'] + correction
        total = sum(components.values())
        return total, components
    return local_energy
