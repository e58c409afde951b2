"""Depth refinement of an untied ResNet: the same weights, as a function of depth, on
a finer grid (Sander, Ablin & Peyré 2022)."""

import math
from typing import Literal

import equinox as eqx
import jax.numpy as jnp

from .._models.scaled import ScaledResidualNet
from .._validation import check_positive_float, check_positive_int
from .untied import (
    _check_interpolation,
    check_untied,
    interpolate_layers,
    stacked_resnet,
)


def _depth_exponent(net: ScaledResidualNet) -> float:
    n, alpha = net.num_layers, float(net.alpha)
    if n < 2 or not alpha > 0:
        raise ValueError(
            f"Cannot infer the depth exponent beta from alpha = N^-beta with N={n}, "
            f"alpha={alpha}: pass `beta=` explicitly."
        )
    return -math.log(alpha) / math.log(n)


def refine_depth(
    net: ScaledResidualNet,
    factor: int,
    *,
    interpolation: Literal["linear", "piecewise"] = "linear",
    beta: float | None = None,
) -> ScaledResidualNet:
    """Refine an untied ResNet `x_{k+1} = x_k + N^{-beta} f_{theta_k}(x_k)` of depth
    `N` into one of depth `rN`: layer `j` gets the weights `theta(j / (rN))` of the
    depth function `theta(k / N) = theta_k`, and the scale becomes
    `alpha r^{-beta}` (`(rN)^{-beta}` for `alpha = N^{-beta}`).

    If the trained network discretises an ODE (smooth `theta`, `beta = 1`), the refined
    networks' outputs converge as `r -> inf`, and the original is within `O(1/N)` of
    the limit; for weights that are not a regular function of depth (i.i.d. layers)
    the linearly refined network differs from the original by `O(1)`
    (Sander et al. 2022).

    **Arguments:**

    - `net`: a `ScaledResidualNet` with skip damping 0 (e.g. from `untied_resnet`).
    - `factor`: `r >= 1`; `r = 1` returns the same network.
    - `interpolation`: `"linear"` (linear between `theta_k` and `theta_{k+1}`,
        constant after `theta_{N-1}`) or `"piecewise"` (each layer repeated `r` times:
        the refinement of `EulerResNet(PiecewiseField(fields, T), rN, T)`).
    - `beta`: the depth exponent; default: inferred from `alpha = N^{-beta}` (needs
        `N >= 2`).

    **Returns:**

    A `ScaledResidualNet` of depth `rN`. Its layer `j` is called with `t = j`; fields
    that use `t` see the new layer index.
    """
    net = check_untied("net", net)
    r = check_positive_int("factor", factor)
    interpolation = _check_interpolation(interpolation)
    if r == 1:
        return net
    beta = _depth_exponent(net) if beta is None else check_positive_float("beta", beta)
    n, m = net.num_layers, r * net.num_layers
    alpha = net.alpha * r ** (-beta)
    if net.tied:
        refined = ScaledResidualNet(net.fields, m, alpha=1.0)
        return eqx.tree_at(lambda x: x.alpha, refined, jnp.asarray(alpha))
    return stacked_resnet(_interpolate(net.fields, n, r, interpolation), m, alpha)


@eqx.filter_jit
def _interpolate(fields, n: int, r: int, interpolation: str):
    s = jnp.arange(r * n, dtype=jnp.result_type(float)) / r
    return eqx.filter_vmap(
        lambda s_: interpolate_layers(fields, s_, n, interpolation),
        out_axes=eqx.if_array(0),
    )(s)
