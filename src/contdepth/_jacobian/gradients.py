from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Args, State
from .._models.base import AbstractDiscreteDepthModel
from .._validation import check_callable
from ._common import check_model_and_state


def layer_gradient_norms(
    model: AbstractDiscreteDepthModel,
    loss_fn: Callable[[State], Float[Array, ""]],
    y: State,
    *,
    args: Args = None,
) -> Float[Array, " layers+1"]:
    """The gradient norms `||dL/dy_k||`, `k = 0, ..., N`, of a loss `L = loss_fn(y_N)`
    with respect to every intermediate state `y_k` of a discrete depth model: the
    vanishing/exploding-gradient profile over depth.

    By the chain rule `dL/dy_k = (dy_N/dy_k)^T dL/dy_N`, so the profile is the
    backward Jacobian of the top `N - k` layers applied to the output gradient: flat
    for a well-conditioned [`contdepth.EulerResNet`][] at fixed horizon, decaying
    geometrically towards `k = 0` for a deep tanh [`contdepth.PlainNet`][]
    (vanishing), growing for an unscaled ResNet with large branches (exploding).

    Computed with one forward and one backward pass: the gradient with respect to
    zero perturbations `delta_k` added to each layer's input
    (`cd.AbstractDiscreteDepthModel.perturbed`) equals `dL/dy_k`, and a perturbation
    of the output gives `dL/dy_N`.

    Reference: Bengio, Simard & Frasconi 1994, "Learning long-term dependencies with
    gradient descent is difficult"; Glorot & Bengio 2010.

    **Arguments:**

    - `model`: a discrete depth model (`cd.AbstractDiscreteDepthModel`):
        [`contdepth.EulerResNet`][], [`contdepth.PlainNet`][],
        [`contdepth.HighwayNet`][], [`contdepth.ScaledResidualNet`][].
    - `loss_fn`: `loss_fn(y_N) -> scalar`, a function of the model output (close over
        targets, e.g. `lambda out: cross_entropy(head(out), label)`).
    - `y`: one input state `y_0` (no batch axis; `jax.vmap` over a batch).
    - `args`: forwarded to the model.

    **Returns:**

    The Euclidean norms `||dL/dy_k||` (over all state axes), shape `(N + 1,)`;
    entry 0 is the input gradient, entry `N` the output gradient.
    """
    if not isinstance(model, AbstractDiscreteDepthModel):
        raise TypeError(
            "`model` must be a discrete depth model (`cd.AbstractDiscreteDepthModel`: "
            "`cd.EulerResNet`, `cd.PlainNet`, `cd.HighwayNet`, "
            "`cd.ScaledResidualNet`), "
            f"got {type(model).__name__}. A `cd.NeuralODE` has no layers: discretise "
            "its field with `cd.EulerResNet` instead."
        )
    check_model_and_state(model, y, args=args)
    check_callable("loss_fn", loss_fn)
    out = jax.eval_shape(lambda: loss_fn(model(y, args)))
    if getattr(out, "shape", None) != () or not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(
            "`loss_fn(model(y))` must return a floating-point scalar, got "
            f"{getattr(out, 'shape', type(out).__name__)} of dtype "
            f"{getattr(out, 'dtype', None)}."
        )
    return _gradient_norms(model, loss_fn, y, args)


@eqx.filter_jit
def _gradient_norms(model, loss_fn, y, args):
    def loss(deltas, output_delta):
        return loss_fn(model.perturbed(y, deltas, args) + output_delta)

    deltas = jnp.zeros((model.num_layers, *y.shape), dtype=y.dtype)
    g_layers, g_out = jax.grad(loss, argnums=(0, 1))(deltas, jnp.zeros_like(y))
    grads = jnp.concatenate([g_layers, g_out[None]])
    return jnp.sqrt(jnp.sum(grads**2, axis=tuple(range(1, grads.ndim))))
