"""The depth family of one trained untied ResNet refined in depth: `N ->
refine_depth(net, N / N_train)`, whose limit is the net's Neural ODE (Sander, Ablin &
Peyré 2022)."""

from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .._depth.refine import refine_depth
from .._depth.untied import (
    _check_interpolation,
    as_neural_ode,
    check_untied,
    interpolate_layers,
)
from .._models.neural_ode import NeuralODE
from .._models.scaled import ScaledResidualNet
from .._stacking import index_module
from .._validation import check_positive_int
from .families import tight_ode


class TracedRefinedResNet(eqx.Module):
    """`refine_depth(net, r)` with the depth `rN` and the factor `r` as arrays: one
    compiled program serves every refinement. Layer `j` interpolates the trained
    layers at `s = j / r` inside a `while` loop (no `(rN, ...)` weight stack is built)
    with the arithmetic of the refined `ScaledResidualNet` (`y + alpha f_j(j, y)`;
    equal up to rounding, as XLA may fuse the interpolation differently). Forward-mode
    autodiff only."""

    layers: Callable  # the trained net's fields, stacked along a first axis
    num_layers: int = eqx.field(static=True)  # N, the trained depth
    interpolation: Literal["linear", "piecewise"] = eqx.field(static=True)
    num_steps: Int[Array, ""]  # r N
    factor: Int[Array, ""]  # r
    alpha: Float[Array, ""]  # N^-1 r^-1

    def check_state(self, y, name: str = "y") -> None:
        own = getattr(index_module(self.layers, 0), "check_state", None)
        if callable(own):
            own(y, name)

    def __call__(self, y, args=None):
        self.check_state(y)
        dtype = jnp.result_type(float)  # as `refine_depth`'s layer positions
        alpha = self.alpha.astype(y.dtype)

        def body(j, y):
            s = j.astype(dtype) / self.factor.astype(dtype)
            layer = interpolate_layers(
                self.layers, s, self.num_layers, self.interpolation
            )
            return y + alpha * layer(j.astype(y.dtype), y, args)

        return lax.fori_loop(0, self.num_steps, body, y)


class RefinedFamily(eqx.Module):
    """`N -> refine_depth(net, N / N_train, beta=1)` for depths `N` that are multiples
    of the trained depth `N_train`; `limit` is `as_neural_ode(net)` (tight
    tolerances)."""

    net: ScaledResidualNet
    interpolation: Literal["linear", "piecewise"] = eqx.field(static=True)

    def _factor(self, num_steps: int) -> int:
        n = self.net.num_layers
        num_steps = check_positive_int("N", num_steps)
        if num_steps % n:
            raise ValueError(
                f"A refined family of a net trained at depth N_train={n} has the "
                f"depths r * N_train (r = 1, 2, ...), got N={num_steps}: sweep "
                f"multiples of {n}, e.g. steps=({n}, {2 * n}, {4 * n})."
            )
        return num_steps // n

    def __call__(self, num_steps: int) -> ScaledResidualNet:
        return refine_depth(
            self.net,
            self._factor(num_steps),
            interpolation=self.interpolation,
            beta=1.0,
        )

    def traced_depth(self, num_steps: int) -> TracedRefinedResNet:
        r = self._factor(num_steps)
        return TracedRefinedResNet(
            self.net.fields,
            self.net.num_layers,
            self.interpolation,
            jnp.asarray(num_steps, jnp.int32),
            jnp.asarray(r, jnp.int32),
            jnp.asarray(self.net.alpha * r ** (-1.0)),  # as `refine_depth`'s alpha
        )

    def limit(self, dtype) -> NeuralODE:
        ode = as_neural_ode(self.net, 1.0, interpolation=self.interpolation)
        return tight_ode(ode.field, 1.0, dtype)


def refined(
    net: ScaledResidualNet,
    *,
    interpolation: Literal["linear", "piecewise"] = "linear",
) -> RefinedFamily:
    """The depth refinements of one (trained) untied ResNet
    `x_{k+1} = x_k + (1/N) f_{theta_k}(x_k)`: `N -> refine_depth(net, N / N_train)`,
    depths `N` multiple of the net's depth `N_train` (`N = N_train` is the net itself).

    Its `limit` is the Neural ODE `as_neural_ode(net, interpolation=...)` with
    tolerances tight for the dtype, so a sweep measures how far the net is from its ODE.
    Linearly interpolated fixed weights always converge to the ODE of the interpolated
    weight path, at `O(1/N)`; whether that ODE is *the trained net's* is told by the
    error at `N = N_train` and by [`contdepth.depth_regularity`][] of the weights: small
    for smooth weights, `O(1)` for i.i.d. ones (Sander, Ablin & Peyré 2022).

    **Arguments:**

    - `net`: a [`contdepth.ScaledResidualNet`][] with skip damping 0 and
        `alpha = 1/N_train`, e.g. `cd.untied_resnet(..., beta=1.0)` after training.
    - `interpolation`: `"linear"` or `"piecewise"`, for the refinement and the ODE.

    **Returns:**

    A depth family with `limit` and `traced_depth` (one compile for every `N`).
    """
    net = check_untied("net", net)
    interpolation = _check_interpolation(interpolation)
    as_neural_ode(net, interpolation=interpolation)  # checks alpha = 1/N
    return RefinedFamily(net, interpolation)
