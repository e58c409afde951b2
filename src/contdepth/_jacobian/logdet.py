import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Args, State
from .._models.base import AbstractDiscreteDepthModel
from ._common import check_model_and_state, check_square, flat_map
from .dense import jacobian
from .step import step_jacobians


def log_det_jacobian(model, y: State, *, args: Args = None) -> Float[Array, ""]:
    """`log |det J|` of the Jacobian `J = d model(y) / dy`: the log of the volume
    change of the network map at `y`, equal to `sum_i log sigma_i(J)`.

    - [`contdepth.EulerResNet`][]: exact as `sum_k log|det(I + h J_F(t_k, y_k))|` over
        the step Jacobians of [`contdepth.step_jacobians`][].
    - Any other `cd.AbstractDiscreteDepthModel` ([`contdepth.PlainNet`][],
        [`contdepth.HighwayNet`][], [`contdepth.ScaledResidualNet`][]): the same sum
        over its layer Jacobians.
    - Anything else ([`contdepth.NeuralODE`][], ...): `slogdet` of the dense
        [`contdepth.jacobian`][].

    Summing per-step log-determinants never forms the product, so it neither
    overflows nor underflows for deep stacks whose determinant leaves the
    floating-point range (a tanh `PlainNet`'s determinant underflows long before its
    log does). Each determinant comes from an LU factorisation (`jnp.linalg.slogdet`).
    The result is `-inf` where `J` is singular.

    This is the quantity a continuous normalising flow integrates: as `N -> inf` with
    `T` fixed, `sum_k log det(I + h J_F) -> int_0^T tr J_F(t, y(t)) dt` (Liouville).
    Reference: Chen et al. 2018, "Neural Ordinary Differential Equations", Thm. 1.

    **Arguments:**

    - `model`: any callable `model(y, args) -> state` with a square Jacobian.
    - `y`: one input state (flattened to `d = prod(y.shape)`).
    - `args`: forwarded to the model.

    **Returns:**

    A scalar, `log|det J|`.
    """
    check_model_and_state(model, y, args=args)
    _, _, out_shape = flat_map(model, y, args)
    check_square(y, out_shape, "`log_det_jacobian`")
    return _log_det(model, y, args)


@eqx.filter_jit
def _log_det(model, y, args):
    if isinstance(model, AbstractDiscreteDepthModel):
        factors = step_jacobians(model, y, args=args)
    else:
        factors = jacobian(model, y, args=args)[None]
    _, logabsdet = jnp.linalg.slogdet(factors)
    return jnp.sum(logabsdet)
