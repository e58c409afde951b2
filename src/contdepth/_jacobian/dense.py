from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._custom_types import Args, State
from ._common import check_choice, check_model_and_state, flat_map, with_autodiff_mode


def jacobian(
    model,
    y: State,
    *,
    mode: Literal["auto", "fwd", "rev"] = "auto",
    args: Args = None,
) -> Float[Array, "d_out d_in"]:
    """The dense Jacobian `d model(y) / dy` at one state, materialised.

    Non-vector states (images `(C, H, W)`, token sets `(L, D)`) are flattened in C
    order, so the result is always a matrix `(d_out, d_in)` with `d = prod(shape)`;
    for a depth model it is square `(d, d)`.

    **Arguments:**

    - `model`: any callable `model(y, args) -> state`, e.g. [`contdepth.EulerResNet`][],
        [`contdepth.NeuralODE`][], [`contdepth.PlainNet`][].
    - `y`: one input state (no batch axis; `jax.vmap` this function over a batch).
    - `mode`: `"fwd"` (`jax.jacfwd`, `d_in` Jacobian-vector products), `"rev"`
        (`jax.jacrev`, `d_out` vector-Jacobian products) or `"auto"`: forward mode when
        `d_in <= d_out` (always, for a depth model: both sides cost `d` passes, and
        forward mode stores no tape), reverse mode otherwise.
    - `args`: forwarded to the model.

    **Returns:**

    The Jacobian, shape `(d_out, d_in)`.

    A [`contdepth.NeuralODE`][] whose adjoint is reverse-only (the default
    `RecursiveCheckpointAdjoint`) is differentiated in forward mode through
    `diffrax.ForwardMode()`: the same solver on the same steps, so both modes agree to
    round-off.
    """
    check_choice("mode", mode, ("auto", "fwd", "rev"))
    check_model_and_state(model, y, args=args)
    if mode == "auto":
        mode = (
            "fwd"
            if np.prod(y.shape) <= np.prod(jax.eval_shape(lambda: model(y, args)).shape)
            else "rev"
        )
    return _materialise(with_autodiff_mode(model, mode), y, args, mode)


@eqx.filter_jit  # compiled once per model structure: repeat calls do not retrace
def _materialise(model, y, args, mode):
    fn, y_flat, _ = flat_map(model, y, args)
    jac = jax.jacfwd(fn) if mode == "fwd" else jax.jacrev(fn)
    return jac(y_flat)


def singular_values(model, y: State, *, args: Args = None) -> Float[Array, " d"]:
    """All singular values of the Jacobian `d model(y) / dy`, from a dense SVD.

    Costs `O(d)` autodiff passes and `O(d^3)` flops: for large states use
    [`contdepth.extreme_singular_values`][] instead.

    **Arguments:**

    - `model`: any callable `model(y, args) -> state`.
    - `y`: one input state.
    - `args`: forwarded to the model.

    **Returns:**

    The `min(d_out, d_in)` singular values in descending order.
    """
    return jnp.linalg.svd(jacobian(model, y, args=args), compute_uv=False)
