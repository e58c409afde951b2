import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Args, State
from .._models.euler import EulerResNet


def step_jacobians(
    euler_model: EulerResNet, y: State, *, args: Args = None
) -> Float[Array, "num_steps d d"]:
    """The per-step Jacobians `I + h J_F(t_k, y_k)`, `k = 0, ..., N - 1`, of an
    [`contdepth.EulerResNet`][] along its trajectory from `y`.

    Their ordered product `S_{N-1} ... S_1 S_0` is the end-to-end Jacobian
    [`contdepth.jacobian`][] (chain rule), and `sum_k log|det S_k|` is
    [`contdepth.log_det_jacobian`][].

    **Arguments:**

    - `euler_model`: an [`contdepth.EulerResNet`][].
    - `y`: the input state `y_0` (flattened to `d = prod(y.shape)` in the result).
    - `args`: forwarded to the field.

    **Returns:**

    The stacked step Jacobians, shape `(N, d, d)`; entry `k` is the Jacobian of step
    `y_k -> y_{k+1}`.
    """
    if not isinstance(euler_model, EulerResNet):
        raise TypeError(
            "`euler_model` must be a `cd.EulerResNet` (its steps are `I + h J_F`), got "
            f"{type(euler_model).__name__}. For any other model use `cd.jacobian`."
        )
    ys = euler_model.trajectory(y, args)[:-1]
    ts = euler_model.times(dtype=y.dtype)
    h = jnp.asarray(euler_model.step_size, dtype=y.dtype)
    shape = y.shape
    d = y.size

    def field_jacobian(t, y_k):
        def fn(x):
            return jnp.reshape(euler_model.field(t, jnp.reshape(x, shape), args), (-1,))

        return jax.jacfwd(fn)(jnp.reshape(y_k, (-1,)))

    jf = jax.vmap(field_jacobian)(ts, ys)
    return jnp.eye(d, dtype=y.dtype)[None] + h * jf
