"""Backpropagation through an invertible scan without storing its states.

`z_{k+1} = step(operands, k, z_k)` for `k = 0, ..., N - 1`. If every step can be undone,
`z_k = inverse(operands, k, z_{k+1})`, the backward pass needs only `z_N`: it walks back
from `z_N`, rebuilding each `z_k` and pulling the cotangent through that one step's
vjp. Activation memory is O(1) in `N` instead of the O(N) of ordinary backprop, for one
extra evaluation of each step (the inverse) on the way back.

References: Gomez et al. 2017, "The Reversible Residual Network: Backpropagation Without
Storing Activations"; Kidger et al. 2021, "Efficient and Accurate Gradients for Neural
SDEs" (the same idea for reversible ODE/SDE solvers).
"""

from collections.abc import Callable
from typing import Any, Literal, TypeAlias

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Int, PyTree


Memory: TypeAlias = Literal["reversible", "store"]
MEMORY_MODES = ("reversible", "store")

#: `step(operands, k, z) -> z_next` and `inverse(operands, k, z_next) -> z`.
StepFn: TypeAlias = Callable[[PyTree[Any], Int[Array, ""], PyTree[Array]], PyTree[Array]]


def check_memory(memory) -> Memory:
    if memory not in MEMORY_MODES:
        raise ValueError(
            f"`memory` must be 'reversible' (rebuild activations on the backward pass: "
            f"O(1) memory in depth) or 'store' (ordinary backprop: O(N) memory), got "
            f"{memory!r}."
        )
    return memory


def _scan(step: StepFn, operands, z0, num_steps: int):
    def body(z, k):
        return step(operands, k, z), None

    z_final, _ = lax.scan(body, z0, jnp.arange(num_steps))
    return z_final


def reversible_scan(
    step: StepFn,
    inverse: StepFn,
    operands: PyTree[Any],
    z0: PyTree[Array],
    num_steps: int,
    *,
    memory: Memory = "reversible",
) -> PyTree[Array]:
    """Run `z_{k+1} = step(operands, k, z_k)` for `num_steps` steps.

    **Arguments:**

    - `step`, `inverse`: module-level functions `(operands, k, z) -> z`, with
        `inverse(operands, k, step(operands, k, z)) == z` up to round-off.
    - `operands`: any PyTree (the model and the field's `args`); gradients flow to its
        floating-point arrays.
    - `z0`: the initial state, a PyTree of arrays.
    - `num_steps`: `N`.
    - `memory`: `"reversible"` (custom VJP that rebuilds states backwards) or `"store"`
        (plain autodiff through one `lax.scan`; also supports forward mode).

    **Returns:**

    `z_N`, with the same structure as `z0`.
    """
    if memory == "store":
        return _scan(step, operands, z0, num_steps)
    return _reversible((operands, z0), step, inverse, num_steps)


@eqx.filter_custom_vjp
def _reversible(operands__z0, step, inverse, num_steps):
    operands, z0 = operands__z0
    return _scan(step, operands, z0, num_steps)


@_reversible.def_fwd
def _reversible_fwd(perturbed, operands__z0, step, inverse, num_steps):
    del perturbed
    operands, z0 = operands__z0
    z_final = _scan(step, operands, z0, num_steps)
    # Only the final state is kept: everything before it is rebuilt on the way back.
    return z_final, z_final


@_reversible.def_bwd
def _reversible_bwd(z_final, grad_final, perturbed, operands__z0, step, inverse, num_steps):
    del perturbed
    operands, z0 = operands__z0
    grad_final = jtu.tree_map(
        lambda z, g: jnp.zeros_like(z) if g is None else g,
        z_final,
        grad_final,
        is_leaf=lambda x: x is None,
    )
    diff, static = eqx.partition(operands, eqx.is_inexact_array)

    def body(carry, k):
        z_next, grad_z_next, grad_diff = carry
        z = inverse(operands, k, z_next)
        _, vjp = jax.vjp(lambda d, z_: step(eqx.combine(d, static), k, z_), diff, z)
        grad_diff_k, grad_z = vjp(grad_z_next)
        grad_diff = jtu.tree_map(jnp.add, grad_diff, grad_diff_k)
        return (z, grad_z, grad_diff), None

    init = (z_final, grad_final, jtu.tree_map(jnp.zeros_like, diff))
    (z0_rebuilt, grad_z0, grad_diff), _ = lax.scan(
        body, init, jnp.arange(num_steps), reverse=True
    )
    # The true input is at hand, so the drift of the rebuilt activations costs one
    # comparison; beyond sqrt(eps) the gradient would be silently wrong.
    drift = reconstruction_error(z0_rebuilt, z0)
    tol = jnp.sqrt(jnp.finfo(drift.dtype).eps)
    grad_z0 = eqx.error_if(grad_z0, drift > tol, _DRIFT_MESSAGE)
    return grad_diff, grad_z0


_DRIFT_MESSAGE = (
    "memory='reversible': rebuilding the activations backwards drifted from the input by "
    "more than sqrt(eps) (relative), so this gradient would be wrong. The inverse step "
    "amplifies round-off (for MomentumResNet by about gamma**-num_steps). Use float64, "
    "fewer steps, gamma closer to 1, or memory='store'."
)


def reconstruction_error(z_rebuilt: PyTree[Array], z: PyTree[Array]) -> Array:
    """`max |z_rebuilt - z| / (1 + max |z|)` over all leaves: the relative drift of
    a state rebuilt by running the inverse steps."""
    diff = jtu.tree_leaves(jtu.tree_map(lambda a, b: jnp.max(jnp.abs(a - b)), z_rebuilt, z))
    size = jtu.tree_leaves(jtu.tree_map(lambda b: jnp.max(jnp.abs(b)), z))
    return jnp.max(jnp.stack(diff)) / (1 + jnp.max(jnp.stack(size)))
