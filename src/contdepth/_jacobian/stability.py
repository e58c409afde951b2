from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Complex, Float, Int

from .._custom_types import Args, State
from .._fields.protocol import check_field, check_field_state
from .._step_rule import Method, METHODS, stability_polynomial
from .._validation import (
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
    check_real,
)
from ._common import check_choice


def stability_function(method: Method, z: Complex[ArrayLike, "*shape"]) -> Array:
    """The stability function `R(z)` of an explicit Runge-Kutta method: one step of
    size `h` on `dy/dt = lambda y` multiplies `y` by `R(h lambda)`.

    `"euler"`: `1 + z`; `"heun"`, `"midpoint"`: `1 + z + z^2/2`; `"rk4"`:
    `1 + z + z^2/2 + z^3/6 + z^4/24`.

    **Arguments:**

    - `method`: `"euler"`, `"heun"`, `"midpoint"` or `"rk4"`.
    - `z`: complex (or real) values `h lambda`, any shape.

    **Returns:**

    `R(z)`, same shape as `z`.
    """
    check_choice("method", method, METHODS)
    # From the method's Butcher tableau: R(z) = 1 + sum_j z^j b^T A^(j-1) 1.
    return stability_polynomial(method, z)


class StabilityRegion(eqx.Module):
    """The result of [`contdepth.stability_region`][]: `|R(z)|` on a grid of the
    complex plane, ready for `matplotlib`'s `contour`/`contourf(x, y, modulus)`.

    - `x`: real parts, shape `(resolution,)`.
    - `y`: imaginary parts, shape `(resolution,)`.
    - `modulus`: `|R(x[j] + i y[i])|` at `[i, j]`, shape `(resolution, resolution)`.
        The stability region is `modulus <= 1`.
    - `method`: the method's name.
    """

    x: Float[Array, " n"]
    y: Float[Array, " n"]
    modulus: Float[Array, "n n"]
    method: str = eqx.field(static=True)

    def plot(self, ax=None, **contourf_kwargs):
        """Shade the region `|R(z)| <= 1` and draw its boundary on a matplotlib axis
        (a new figure if `ax` is `None`); returns the axis."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4, 4))
        x, y, m = np.asarray(self.x), np.asarray(self.y), np.asarray(self.modulus)
        ax.contourf(x, y, m, levels=[0.0, 1.0], alpha=0.3, **contourf_kwargs)
        ax.contour(x, y, m, levels=[1.0], colors="k", linewidths=1.0)
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.axvline(0.0, color="grey", lw=0.5)
        ax.set_aspect("equal")
        ax.set_xlabel("Re(h lambda)")
        ax.set_ylabel("Im(h lambda)")
        ax.set_title(f"{self.method}: |R(z)| <= 1")
        return ax


def stability_region(
    method: Method,
    *,
    extent: tuple[float, float, float, float] = (-3.5, 1.5, -3.5, 3.5),
    resolution: int = 401,
) -> StabilityRegion:
    """`|R(z)|` on a grid, for plotting the absolute-stability region `|R(z)| <= 1` of
    an explicit Runge-Kutta method ([`contdepth.stability_function`][]).

    Forward Euler's region is the disc `|1 + z| <= 1`: it touches the imaginary axis
    only at 0, so any purely imaginary `h lambda` (antisymmetric weights, rotations,
    the Schroedinger update) is amplified by `sqrt(1 + |h lambda|^2) > 1` every step.
    RK4's region contains the imaginary segment `|Im z| <= 2 sqrt(2)`.

    Reference: Hairer & Wanner, "Solving Ordinary Differential Equations II", IV.2.

    **Arguments:**

    - `method`: `"euler"`, `"heun"`, `"midpoint"` or `"rk4"`.
    - `extent`: `(x_min, x_max, y_min, y_max)` of the grid; the default covers every
        region here.
    - `resolution`: grid points per axis, `>= 2`.

    **Returns:**

    A [`contdepth.StabilityRegion`][] with `x`, `y` and `modulus`.
    """
    check_choice("method", method, METHODS)
    resolution = check_positive_int("resolution", resolution)
    if resolution < 2:
        raise ValueError(f"`resolution` must be an int >= 2, got {resolution}.")
    if not isinstance(extent, (tuple, list)) or len(extent) != 4:
        raise ValueError(
            "`extent` must be a tuple (x_min, x_max, y_min, y_max) of four numbers, "
            f"got {extent!r}."
        )
    x0, x1, y0, y1 = (check_real(f"extent[{i}]", e) for i, e in enumerate(extent))
    if not (x0 < x1 and y0 < y1):
        raise ValueError(
            "`extent` must satisfy x_min < x_max and y_min < y_max, got "
            f"{tuple(extent)}."
        )
    x = jnp.linspace(x0, x1, resolution)
    y = jnp.linspace(y0, y1, resolution)
    z = x[None, :] + 1j * y[:, None]
    return StabilityRegion(
        x=x, y=y, modulus=jnp.abs(stability_function(method, z)), method=method
    )


class StabilityReport(eqx.Module):
    """The result of [`contdepth.stability_report`][].

    - `eigenvalues`: the eigenvalues `z = h lambda` of `h J_F(t, y)`, complex,
        shape `(d,)`.
    - `amplification`: `|R(z)|` for each, shape `(d,)`; the factor by which one step
        scales the corresponding eigen-direction of the linearised field.
    - `unstable`: `amplification > 1 + tol`, boolean, shape `(d,)`.
    - `num_unstable`: how many are flagged.
    - `method`, `step_size`, `tol`: the settings used.

    `print(report)` or `report.summary()` gives a readable table (concrete values
    only, not under `jit`).
    """

    eigenvalues: Complex[Array, " d"]
    amplification: Float[Array, " d"]
    unstable: Bool[Array, " d"]
    num_unstable: Int[Array, ""]
    method: str = eqx.field(static=True)
    step_size: float = eqx.field(static=True)
    tol: float = eqx.field(static=True)

    def summary(self, max_rows: int = 10) -> str:
        """A text table of the `max_rows` eigenvalues with the largest `|R(z)|`."""
        z = np.asarray(self.eigenvalues)
        amp = np.asarray(self.amplification)
        bad = np.asarray(self.unstable)
        order = np.argsort(-amp, kind="stable")
        lines = [
            f"StabilityReport(method={self.method!r}, step_size={self.step_size:g}, "
            f"d={z.size})",
            f"  {int(bad.sum())} of {z.size} eigenvalues z = h*lambda of h*J_F lie "
            f"outside the {self.method} region |R(z)| <= 1 (tol {self.tol:.1e}); "
            f"max |R(z)| = {amp.max():.6g}",
            f"  {'z = h*lambda':>26}  {'|R(z)|':>12}  outside",
        ]
        for i in order[:max_rows]:
            zi = complex(z[i])
            lines.append(
                f"  {zi.real:12.5g} {zi.imag:+12.5g}j  {amp[i]:12.8g}  "
                f"{'yes' if bad[i] else 'no'}"
            )
        if z.size > max_rows:
            lines.append(f"  ... {z.size - max_rows} more")
        return "\n".join(lines)

    def __repr__(self) -> str:
        if isinstance(self.amplification, jax.core.Tracer):
            return f"StabilityReport(method={self.method!r}, <traced>)"
        return self.summary()


def stability_report(
    field: Callable,
    y: State,
    step_size: float,
    method: Method = "euler",
    *,
    t: float = 0.0,
    args: Args = None,
    tol: float | None = None,
) -> StabilityReport:
    """Linear stability of one explicit step at the state `y`: the eigenvalues
    `z = h lambda` of `h J_F(t, y)` (the dense field Jacobian, `jax.jacfwd`) against
    the method's absolute-stability region `|R(z)| <= 1`
    ([`contdepth.stability_function`][]), flagging those outside.

    An eigenvalue outside means one step of the linearised network amplifies that
    eigen-direction by `|R(z)| > 1` even where the exact flow does not: e.g. for an
    antisymmetric `A` the flow `expm(tA)` is orthogonal, yet every forward-Euler step
    multiplies by `|1 + i h b| = sqrt(1 + h^2 b^2)`, so after `N` steps
    `sigma_max = (1 + h^2 b^2)^(N/2)`. This is a local (frozen-Jacobian) test: it is
    exact for linear fields and a guide for nonlinear ones.

    **Arguments:**

    - `field`: the vector field `F(t, y, args)`: any callable.
    - `y`: the state at which to linearise (flattened to `d = prod(y.shape)`).
    - `step_size`: the step `h > 0` (`horizon / num_steps` of an
        [`contdepth.EulerResNet`][]).
    - `method`: `"euler"`, `"heun"`, `"midpoint"` or `"rk4"`.
    - `t`: the time at which to linearise (a number, or a scalar array under `jit`).
    - `args`: forwarded to the field.
    - `tol`: flag `|R(z)| > 1 + tol`; default `1000 eps` of `y`'s dtype (`2.2e-13`
        in float64), which absorbs eigenvalue round-off.

    **Returns:**

    A [`contdepth.StabilityReport`][].
    """
    check_field("field", field)
    check_field_state(field, y, args, "y")
    step_size = check_positive_float("step_size", step_size)
    check_choice("method", method, METHODS)
    if not isinstance(t, jax.core.Tracer):
        t = check_real("t", t)
    if tol is None:
        tol = 1000 * float(jnp.finfo(y.dtype).eps)
    tol = check_nonnegative_float("tol", tol)
    t, h = jnp.asarray(t, y.dtype), jnp.asarray(step_size, y.dtype)
    z, amplification, unstable = _analyse(field, y, t, h, args, method, tol)
    return StabilityReport(
        eigenvalues=z,
        amplification=amplification,
        unstable=unstable,
        num_unstable=jnp.sum(unstable),
        method=method,
        step_size=step_size,
        tol=tol,
    )


@eqx.filter_jit
def _analyse(field, y, t, h, args, method: str, tol: float):
    shape = y.shape

    def flat_field(x):
        return jnp.reshape(field(t, x.reshape(shape), args), (-1,))

    z = jnp.linalg.eigvals(h * jax.jacfwd(flat_field)(jnp.reshape(y, (-1,))))
    amplification = jnp.abs(stability_function(method, z))
    return z, amplification, amplification > 1 + tol
