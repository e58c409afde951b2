import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Args, State
from .._models.base import AbstractDiscreteDepthModel
from ._common import check_model_and_state


def step_jacobians(
    model: AbstractDiscreteDepthModel, y: State, *, args: Args = None
) -> Float[Array, "num_layers d d"]:
    """The per-layer Jacobians `S_k = d y_{k+1} / d y_k`, `k = 0, ..., N - 1`, of a
    discrete depth model along its trajectory from `y`. For an
    [`contdepth.EulerResNet`][] on any field `F` they are `I + h J_F(t_k, y_k)`.

    Their ordered product `S_{N-1} ... S_1 S_0` is the end-to-end Jacobian
    [`contdepth.jacobian`][] (chain rule), and `sum_k log|det S_k|` is
    [`contdepth.log_det_jacobian`][].

    **Arguments:**

    - `model`: a discrete depth model: any [`contdepth.AbstractDiscreteDepthModel`][]
        (`EulerResNet`, `ScaledResidualNet`, `PlainNet`, `HighwayNet`, or your own
        subclass), i.e. anything with `num_layers`, `step(k, y, args)` and
        `trajectory(y, args)`.
    - `y`: the input state `y_0` (flattened to `d = prod(y.shape)` in the result).
    - `args`: forwarded to the model.

    **Returns:**

    The stacked step Jacobians, shape `(N, d, d)`; entry `k` is the Jacobian of step
    `y_k -> y_{k+1}` (one `jax.jacfwd` per layer, vmapped over the layers).
    """
    if not isinstance(model, AbstractDiscreteDepthModel):
        raise TypeError(
            "`model` must be a discrete depth model with layers `y_{k+1} = step(k, "
            "y_k)` "
            "(a subclass of `cd.AbstractDiscreteDepthModel`, e.g. `cd.EulerResNet`), "
            "got "
            f"{type(model).__name__}. For any other model use `cd.jacobian`."
        )
    check_model_and_state(model, y, args=args)
    ys = model.trajectory(y, args)[:-1]
    shape = y.shape

    def layer_jacobian(k, y_k):
        def fn(x):
            return jnp.reshape(model.step(k, jnp.reshape(x, shape), args), (-1,))

        return jax.jacfwd(fn)(jnp.reshape(y_k, (-1,)))

    return jax.vmap(layer_jacobian)(jnp.arange(model.num_layers), ys)
