"""Backpropagation through an invertible scan without storing its states.

`z_{k+1} = step(operands, k, z_k)` for `k = 0, ..., N - 1`. If every step can be undone,
`z_k = inverse(operands, k, z_{k+1})`, the backward pass needs only `z_N`: it walks back
from `z_N`, rebuilding each `z_k` and pulling the cotangent through that one step's
vjp. Activation memory is O(1) in `N` instead of the O(N) of ordinary backprop, for one
inverse step and one recomputed step per layer on the way back.

The custom VJP is reverse mode only: JAX cannot push tangents (`jax.jvp`,
`jax.jacfwd`) through a `custom_vjp`. Forward mode stores no activations anyway, so
use `memory="store"` for it (see `with_memory` on the models).

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
from jaxtyping import Array, Float, Int, PyTree


Memory: TypeAlias = Literal["reversible", "store"]
MEMORY_MODES = ("reversible", "store")

#: `step(operands, k, z) -> z_next` and `inverse(operands, k, z_next) -> z`.
StepFn: TypeAlias = Callable[
    [PyTree[Any], Int[Array, ""], PyTree[Array]], PyTree[Array]
]


def check_memory(memory) -> Memory:
    if not isinstance(memory, str) or memory not in MEMORY_MODES:
        raise ValueError(
            f"`memory` must be 'reversible' (rebuild activations on the backward pass: "
            f"O(1) memory in depth, reverse-mode autodiff only) or 'store' (ordinary "
            f"backprop: O(N) memory, forward and reverse mode), got {memory!r}."
        )
    return memory


def _scan(step: StepFn, operands, z0, num_steps: int, *, reverse: bool = False):
    # The layer index is carried, not scanned over, so no length-N array exists at all.
    def body(carry, _):
        k, z = carry
        if reverse:
            k = k - 1
            return (k, step(operands, k, z)), None
        return (k + 1, step(operands, k, z)), None

    k0 = jnp.asarray(num_steps if reverse else 0, dtype=jnp.int32)
    (_, z_final), _ = lax.scan(body, (k0, z0), None, length=num_steps)
    return z_final


def run_inverse(
    inverse: StepFn, operands: PyTree[Any], z_final: PyTree[Array], num_steps: int
) -> PyTree[Array]:
    """`z_0` rebuilt from `z_N` by the inverse steps `k = N - 1, ..., 0`."""
    return _scan(inverse, operands, z_final, num_steps, reverse=True)


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
    - `memory`: `"reversible"` (custom VJP that rebuilds states backwards; reverse mode
        only) or `"store"` (plain autodiff through one `lax.scan`; both modes).

    **Returns:**

    `z_N`, with the same structure as `z0`.

    With `"reversible"`, the backward pass checks that the rebuilt `z_0` matches the
    true one to `sqrt(eps)` (relative, see `reconstruction_error`) and raises an
    `EquinoxRuntimeError` otherwise, rather than return a wrong gradient.
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
def _reversible_bwd(
    z_final, grad_final, perturbed, operands__z0, step, inverse, num_steps
):
    del perturbed
    operands, z0 = operands__z0
    grad_final = jtu.tree_map(
        lambda z, g: jnp.zeros_like(z) if g is None else g,
        z_final,
        grad_final,
        is_leaf=lambda x: x is None,
    )
    diff, static = eqx.partition(operands, eqx.is_inexact_array)

    def body(carry, _):
        k, z_next, grad_z_next, grad_diff = carry
        k = k - 1
        z = inverse(operands, k, z_next)
        _, vjp = jax.vjp(lambda d, z_: step(eqx.combine(d, static), k, z_), diff, z)
        grad_diff_k, grad_z = vjp(grad_z_next)
        grad_diff = jtu.tree_map(jnp.add, grad_diff, grad_diff_k)
        return (k, z, grad_z, grad_diff), None

    k_final = jnp.asarray(num_steps, dtype=jnp.int32)
    init = (k_final, z_final, grad_final, jtu.tree_map(jnp.zeros_like, diff))
    (_, z0_rebuilt, grad_z0, grad_diff), _ = lax.scan(
        body, init, None, length=num_steps
    )
    # The true input is at hand, so the drift of the rebuilt activations costs one
    # comparison; beyond sqrt(eps) the gradient would be silently wrong. The check is
    # tied to every output, so it survives when only some gradients are used.
    drift = reconstruction_error(z0_rebuilt, z0)
    tol = jnp.sqrt(jnp.finfo(drift.dtype).eps)
    return eqx.error_if((grad_diff, grad_z0), drift > tol, _DRIFT_MESSAGE)


_DRIFT_MESSAGE = (
    "memory='reversible': rebuilding the activations backwards drifted from the input "
    "by "
    "more than sqrt(eps) (relative), so this gradient would be wrong. The inverse step "
    "amplifies round-off (for MomentumResNet by about gamma**-num_steps). Use float64, "
    "fewer steps, gamma closer to 1, or memory='store'."
)


def reconstruction_error(
    z_rebuilt: PyTree[Array], z: PyTree[Array]
) -> Float[Array, ""]:
    """`max |z_rebuilt - z| / (1 + max |z|)` over all leaves: the relative drift of
    a state rebuilt by running the inverse steps."""
    diff = jtu.tree_leaves(
        jtu.tree_map(lambda a, b: jnp.max(jnp.abs(a - b)), z_rebuilt, z)
    )
    size = jtu.tree_leaves(jtu.tree_map(lambda b: jnp.max(jnp.abs(b)), z))
    return jnp.max(jnp.stack(diff)) / (1 + jnp.max(jnp.stack(size)))
