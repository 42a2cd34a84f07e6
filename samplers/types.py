"""Shared type aliases used across qvmc, hamiltonians, ansatz and samplers."""

from typing import Any, Callable, Mapping, Tuple

import jax

Array = jax.Array
PRNGKey = jax.Array
Params = Any  # a pytree of parameters (Haiku's nested dict)
ContextValues = Mapping[str, Array]  # traced Hamiltonian parameters of one task
# (params, x [N, D], context values) -> (sign [], log|psi| [])
WavefunctionFn = Callable[[Params, Array, ContextValues], Tuple[Array, Array]]
# (params, x [N, D], context values) -> log|psi| []
LogPsiFn = Callable[[Params, Array, ContextValues], Array]
