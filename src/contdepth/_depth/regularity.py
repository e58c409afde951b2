"""How regular are a deep network's weights as a function of depth?

A residual network `x_{k+1} = x_k + N^{-beta} f_{theta_k}(x_k)` is the Euler scheme of a
Neural ODE only if its weights `theta_k` are samples `theta(k / N)` of a regular
function of depth. These diagnostics measure that regularity on the per-layer parameter
vectors, and `scaling_exponent` fits how a quantity scales with depth.

References: Sander, Ablin & Peyré 2022, "Do Residual Neural Networks discretize Neural
Ordinary Differential Equations?"; Marion, Wu, Sander & Biau 2024, "Implicit
regularization of deep residual networks towards neural ODEs" (ICLR); Cohen, Cont,
Rossier & Xu 2021, "Scaling properties of deep residual networks" (ICML).
"""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._fields.piecewise import PiecewiseField
from .._models.euler import EulerResNet
from .._models.plain import PlainNet
from .._models.scaled import ScaledResidualNet


def _flat_leaves(tree) -> list[Array]:
    # Floating leaves in `jax.tree.leaves` order: a fixed order for one structure.
    return [
        jnp.asarray(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))
    ]


def _stacked_rows(stacked, num_layers: int) -> Float[Array, "N P"]:
    """Rows of a module whose floating leaves are stacked along a first axis."""
    leaves = _flat_leaves(stacked)
    if not leaves:
        return jnp.zeros((num_layers, 0))
    return jnp.concatenate([x.reshape(num_layers, -1) for x in leaves], axis=1)


def _pytree_row(tree) -> Float[Array, " P"]:
    leaves = _flat_leaves(tree)
    if not leaves:
        return jnp.zeros((0,))
    return jnp.concatenate([x.reshape(-1) for x in leaves])


def _repeat(row, num_layers: int):
    return jnp.broadcast_to(row, (num_layers, row.shape[0]))


def _euler_rows(net: EulerResNet) -> Float[Array, "N P"]:
    field = net.field
    if isinstance(field, PiecewiseField):
        if field.stacked:
            pieces = _stacked_rows(field.pieces, field.num_pieces)
        else:
            pieces = _sequence_rows(field.pieces, "EulerResNet.field.pieces")
        # One row per Euler step: step k uses the piece active at t_k.
        index = field.piece_index(net.times(jnp.result_type(float)))
        return pieces[index]
    # One field for every step: tied weights.
    return _repeat(_pytree_row(field), net.num_steps)


def _sequence_rows(layers, name: str) -> Float[Array, "N P"]:
    rows = [_pytree_row(layer) for layer in layers]
    sizes = {int(r.shape[0]) for r in rows}
    if len(sizes) != 1:
        raise ValueError(
            f"`{name}` holds layers with different numbers of parameters "
            f"({sorted(sizes)}): per-layer increments need layers of one architecture."
        )
    return jnp.stack(rows)


def layer_parameters(model_or_params) -> Float[Array, "N P"]:
    """The per-layer parameter vectors of a depth model, one row per layer.

    Row `k` concatenates the floating-point array leaves of layer `k`, flattened, in
    `jax.tree.leaves` order (fixed for one architecture).

    **Arguments:**

    - `model_or_params`: one of
        - a [`contdepth.ScaledResidualNet`][] (per-layer fields, or one tied field
            repeated `N` times; the scale `alpha` is not a layer parameter);
        - a [`contdepth.EulerResNet`][]: over a [`contdepth.PiecewiseField`][], one row
            per Euler step holding the piece that step applies (so a net refined by
            repeating blocks has repeated rows); over any other field, that field's
            parameters repeated (tied weights);
        - a [`contdepth.PlainNet`][] (`[W_k, b_k]` per layer);
        - any object with a `layer_parameters()` method (the open protocol for user
            stacks), whose result is then read as below;
        - a floating array of shape `(N, P)` (passed through) or `(N, ...)` (flattened
            per row);
        - a sequence of `N` per-layer PyTrees of one architecture.

    **Returns:**

    An array of shape `(N, P)`.
    """
    x = model_or_params
    own = getattr(x, "layer_parameters", None)
    if callable(own):
        return layer_parameters(own())
    if isinstance(x, ScaledResidualNet):
        if x.tied:
            return _repeat(_pytree_row(x.fields), x.num_layers)
        return _stacked_rows(x.fields, x.num_layers)
    if isinstance(x, EulerResNet):
        return _euler_rows(x)
    if isinstance(x, PlainNet):
        return jnp.concatenate([x.weights.reshape(x.num_layers, -1), x.biases], axis=1)
    if isinstance(x, (jax.Array, np.ndarray)):
        if not jnp.issubdtype(x.dtype, jnp.floating) or x.ndim < 2:
            raise TypeError(
                "An array passed as `model_or_params` must be floating point of shape "
                f"(N, P) (one row per layer), got dtype {x.dtype} and shape "
                f"{tuple(x.shape)}. For one parameter per layer pass `x[:, None]`."
            )
        return jnp.asarray(x).reshape(x.shape[0], -1)
    if isinstance(x, Sequence) and not isinstance(x, str):
        if len(x) == 0:
            raise ValueError("`model_or_params` is an empty sequence: no layers.")
        return _sequence_rows(x, "model_or_params")
    raise TypeError(
        "`model_or_params` must be a ScaledResidualNet, an EulerResNet, a PlainNet, an "
        "object with a `layer_parameters()` method returning an (N, P) array, an "
        "(N, P) array or a sequence of per-layer PyTrees; got "
        f"{type(x).__name__}. For your own stack, add a `layer_parameters()` method "
        "or pass its per-layer parameters directly."
    )


class DepthRegularity(eqx.Module):
    """Regularity in depth of the per-layer parameters `theta_0, ..., theta_{N-1}`
    (norms are Euclidean norms of the flattened vectors, i.e. Frobenius norms).

    - `increments`: `(N - 1,)`, `||theta_{k+1} - theta_k||`.
    - `max_increment`: `max_k ||theta_{k+1} - theta_k||` (`0` when `N = 1`).
    - `max_norm`: `max_k ||theta_k||`.
    - `quadratic_variation`: `sum_k ||theta_{k+1} - theta_k||^2`.
    - `h1_norm`: the discrete H^1 norm on the grid `t_k = k / N`,
        `sqrt((1/N) sum_k ||theta_k||^2 + N sum_k ||theta_{k+1} - theta_k||^2)`:
        the L^2 norm of the piecewise-constant weights plus the L^2 norm of their
        difference quotient `(theta_{k+1} - theta_k) / (1/N)`. If `theta_k = theta(k/N)`
        it tends to `||theta||_{H^1}` as `N -> inf`; it stays bounded as `N -> inf`
        iff the weights are an H^1 function of depth (Marion et al. 2024), and grows
        like `sqrt(N)` for i.i.d. layers.
    - `num_layers`: `N`.
    """

    increments: Float[Array, " N-1"]
    max_increment: Float[Array, ""]
    max_norm: Float[Array, ""]
    quadratic_variation: Float[Array, ""]
    h1_norm: Float[Array, ""]
    num_layers: int = eqx.field(static=True)


def depth_regularity(model_or_params) -> DepthRegularity:
    """Depth-regularity diagnostics of a network's weights (see
    [`contdepth.DepthRegularity`][] for the definitions).

    **Arguments:**

    - `model_or_params`: anything [`contdepth.layer_parameters`][] accepts.

    **Returns:**

    A `DepthRegularity`.

    References: Sander, Ablin & Peyré 2022; Marion, Wu, Sander & Biau 2024.
    """
    return _regularity(layer_parameters(model_or_params))


@jax.jit
def _regularity(theta: Float[Array, "N P"]) -> DepthRegularity:
    n = theta.shape[0]
    increments = jnp.linalg.norm(jnp.diff(theta, axis=0), axis=1)
    norms = jnp.linalg.norm(theta, axis=1)
    qv = jnp.sum(increments**2)
    max_increment = jnp.max(increments) if n > 1 else jnp.zeros((), theta.dtype)
    h1 = jnp.sqrt(jnp.sum(norms**2) / n + n * qv)
    return DepthRegularity(
        increments=increments,
        max_increment=max_increment,
        max_norm=jnp.max(norms),
        quadratic_variation=qv,
        h1_norm=h1,
        num_layers=n,
    )


class ScalingFit(eqx.Module):
    """An ordinary least-squares fit `log(value) = intercept + slope * log(depth)`.

    - `slope`: the scaling exponent (e.g. `-1` for an `O(1/N)` error).
    - `intercept`: the fitted log-constant.
    - `slope_stderr`: the OLS standard error of the slope,
        `sqrt(SSR / (n - 2) / sum (log N_i - mean)^2)`.
    - `r_squared`: the coefficient of determination of the log-log fit.
    """

    slope: float
    intercept: float
    slope_stderr: float
    r_squared: float


def scaling_exponent(depths, values) -> ScalingFit:
    """Fit `values ~ C depths^slope` by least squares in log-log coordinates, as
    Cohen et al. 2021 do for the scaling of trained weights with depth.

    **Arguments:**

    - `depths`: `n >= 3` positive depths (or step counts, or any positive abscissa).
    - `values`: `n` positive values measured at those depths.

    **Returns:**

    A [`contdepth.ScalingFit`][].

    Reference: Cohen, Cont, Rossier & Xu 2021, "Scaling properties of deep residual
    networks".
    """
    x = np.asarray(depths, dtype=np.float64).reshape(-1)
    y = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size != y.size:
        raise ValueError(
            f"`depths` and `values` must have the same length, got {x.size} depths and "
            f"{y.size} values."
        )
    if x.size < 3:
        raise ValueError(
            f"`scaling_exponent` needs at least 3 points (the slope's standard error "
            f"has n - 2 degrees of freedom), got {x.size}. Measure more depths."
        )
    for name, arr in (("depths", x), ("values", y)):
        bad = ~(np.isfinite(arr) & (arr > 0))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"`{name}` must be finite and > 0 for a log-log fit, got {arr[i]} at "
                f"index {i}. (A zero error means the quantity is exact at that depth: "
                "drop the point.)"
            )
    lx, ly = np.log(x), np.log(y)
    dx = lx - lx.mean()
    sxx = float(dx @ dx)
    if sxx == 0:
        raise ValueError("`depths` must not all be equal: the slope is undefined.")
    slope = float(dx @ (ly - ly.mean())) / sxx
    intercept = float(ly.mean() - slope * lx.mean())
    resid = ly - (intercept + slope * lx)
    ssr = float(resid @ resid)
    sst = float((ly - ly.mean()) @ (ly - ly.mean()))
    stderr = float(np.sqrt(ssr / (x.size - 2) / sxx))
    r2 = 1.0 - ssr / sst if sst > 0 else 1.0
    return ScalingFit(
        slope=slope, intercept=intercept, slope_stderr=stderr, r_squared=r2
    )
