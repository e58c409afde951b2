"""Penalties on the Lipschitz behaviour of a depth model: the spectral norm of its
input-output Jacobian (matrix-free, differentiable) and the weight-based Lipschitz
bound of its fields.

References: Yoshida & Miyato 2017, "Spectral Norm Regularization for Improving the
Generalizability of Deep Learning"; Gouk, Frank, Pfahringer & Cree 2021,
"Regularisation of neural networks by enforcing Lipschitz continuity" (Machine
Learning).
"""

import equinox as eqx
import jax
import jax.core
import jax.lax as lax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Args, State
from .._fields.protocol import lipschitz_bound
from .._jacobian._common import (
    check_model_and_state,
    check_square,
    flat_map,
    with_autodiff_mode,
)
from .._jacobian.lanczos import GolubKahanLanczos
from .._jacobian.operator import jacobian_operator
from .._models.scaled import ScaledResidualNet
from .._validation import check_key, check_positive_int


_DEFAULT_ITERS = 20


def _frozen(tree):
    return jax.tree.map(
        lambda x: lax.stop_gradient(x) if eqx.is_inexact_array(x) else x, tree
    )


def top_right_singular_vector(model, y: State, args: Args, key, num_iters: int):
    """The top right Ritz vector `v` of `J = d model(y)/dy` (flat, unit norm) after
    `num_iters` Golub-Kahan-Lanczos steps (exact at `num_iters = d`), with no
    gradient."""
    model, y, args = _frozen((model, y, args))
    operator = lx.linearise(jacobian_operator(model, y, args=args))
    solver = GolubKahanLanczos(num_iters)
    state = solver.init(operator, key)
    state = lax.fori_loop(0, num_iters, lambda _, s: solver.step(operator, s), state)
    m = num_iters
    # J V_m = U_m B_m with B_m upper bidiagonal; the top right Ritz vector is V_m q_1.
    bidiagonal = jnp.diag(state.alpha) + jnp.diag(state.beta[1:m], k=1)
    _, _, qt = jnp.linalg.svd(bidiagonal)
    v = state.right[:m].T @ qt[0]
    return lax.stop_gradient(v / jnp.linalg.norm(v))


def spectral_norm_penalty(
    model,
    y: State,
    args: Args = None,
    *,
    key: PRNGKeyArray,
    num_iters: int | None = None,
) -> Float[Array, ""]:
    """`sigma_max(d model(y) / dy)`, the spectral norm of the input-output Jacobian
    `dy_N / dy_0`, matrix-free and differentiable: a penalty on the model's local
    Lipschitz constant (Yoshida & Miyato 2017).

    The top right singular vector `v` comes from `num_iters` steps of
    Golub-Kahan-Lanczos bidiagonalisation ([`contdepth.GolubKahanLanczos`][], the
    method of [`contdepth.extreme_singular_values`][]) on the model with gradients
    stopped; the value is then `||J v||` (one Jacobian-vector product), whose
    gradient is `u^T (dJ) v` with `u = J v / ||J v||`: the derivative of a simple
    `sigma_max`. `||J v|| <= sigma_max` always, with equality at convergence
    (`num_iters = d` is exact). A `cd.NeuralODE` is differentiated with
    `diffrax.DirectAdjoint` (forward and reverse mode are both needed).

    **Arguments:**

    - `model`: any callable `model(y, args) -> state` with a square Jacobian.
    - `y`: the state at which to linearise (no batch axis; `jax.vmap` for batches).
    - `args`: forwarded to the model.
    - `key`: PRNG key for the Lanczos start vector.
    - `num_iters`: Lanczos steps, `1 <= num_iters <= d` (default `min(d, 20)`); cost is
        one jvp and one vjp per step.

    **Returns:**

    A scalar `<= sigma_max`, differentiable in the model's parameters and in `y`.
    """
    check_model_and_state(model, y, args=args)
    check_key("key", key)
    model = with_autodiff_mode(model, "both")
    fn, y_flat, out_shape = flat_map(model, y, args)
    d = check_square(y, out_shape, "`spectral_norm_penalty`")
    if num_iters is None:
        num_iters = min(d, _DEFAULT_ITERS)
    elif not 1 <= check_positive_int("num_iters", num_iters) <= d:
        raise ValueError(
            f"`num_iters` must satisfy 1 <= num_iters <= d = {d}, got {num_iters}."
        )
    v = top_right_singular_vector(model, y, args, key, num_iters)
    _, jv = jax.jvp(fn, (y_flat,), (v.astype(y_flat.dtype),))
    return jnp.linalg.norm(jv)


def lipschitz_penalty(field_or_model, *, log: bool = True) -> Float[Array, ""]:
    """A weight-based Lipschitz penalty: the field's Lipschitz bound `prod_l
    ||W_l||_2 Lip(act)^(layers-1)` ([`contdepth.lipschitz_bound`][], differentiable in
    the weights through their spectral norms), or its log `sum_l log ||W_l||_2 + ...`
    (`log=True`, default: scale-free, and its gradient does not vanish or explode
    with depth). For a `cd.ScaledResidualNet` (untied ResNet) the per-layer values
    are summed.

    Reference: Gouk et al. 2021, "Regularisation of neural networks by enforcing
    Lipschitz continuity".

    **Arguments:**

    - `field_or_model`: a field with a finite `lipschitz_bound()` (e.g.
        `cd.MLPField`, `cd.ConvField`), a model with such a `field` (`cd.EulerResNet`,
        `cd.NeuralODE`), or a `cd.ScaledResidualNet`.
    - `log`: return the log of the bound (default) or the bound itself.

    **Returns:**

    A scalar.
    """
    if isinstance(field_or_model, ScaledResidualNet):
        fields = [field_or_model.layer(i) for i in range(field_or_model.num_layers)]
        if field_or_model.tied:
            fields = fields[:1]
    elif hasattr(field_or_model, "field") and not hasattr(
        field_or_model, "lipschitz_bound"
    ):
        fields = [field_or_model.field]
    else:
        fields = [field_or_model]
    bounds = jnp.stack([lipschitz_bound(f) for f in fields])
    traced = isinstance(bounds, jax.core.Tracer)
    if not traced and not bool(jnp.all(jnp.isfinite(bounds))):
        raise ValueError(
            f"`lipschitz_penalty` needs a finite Lipschitz bound, but the field of "
            f"{type(field_or_model).__name__} has none (no `lipschitz_bound()` "
            "method, or unbounded, e.g. AttentionField): use `spectral_norm_penalty` "
            "(Jacobian-based) instead."
        )
    return jnp.sum(jnp.log(bounds)) if log else jnp.sum(bounds)
