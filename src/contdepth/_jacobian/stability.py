import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Complex, Float, Int

from .._custom_types import Args, RealScalarLike, State
from .._fields.protocol import check_field, check_field_state
from .._optional import require
from .._step_rule import Method, METHODS, stability_polynomial
from .._validation import (
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
    check_real,
)
from ._common import check_choice
from .stability_limits import (
    amplification_of,
    CLASS_NAMES as _CLASS_NAMES,
    classify,
    GROWTH,
    max_stable_steps,
    padded_coefficients,
    roundoff_tolerance,
    snap_to_imaginary_axis,
    UNSTABLE,
)


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
        plt = require("matplotlib.pyplot", extra="plot")

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


# Cheapest first: the suggestion is the cheapest method stable at the current step.
_COST_ORDER: tuple[Method, ...] = ("euler", "heun", "midpoint", "rk4")


class StabilityReport(eqx.Module):
    """The result of [`contdepth.stability_report`][].

    Per eigenvalue (shape `(d,)`):

    - `eigenvalues`: `z = h lambda`, the eigenvalues of `h J_F(t, y)`, complex.
    - `amplification`: `|R(z)|`, the factor by which one step scales the eigen-direction
        of the linearised field.
    - `flow_amplification`: `|e^z| = e^{Re z}`, the same factor for the exact flow
        over one step.
    - `classification`: 0 `"stable"` (`|R| <= 1 + tol`), 1 `"growth as the flow"`
        (`|R| > 1 + tol` but the flow grows too and the step does not grow faster:
        `|R| <= |e^z|^(1 + growth_rtol) + tol`), 2 `"discretisation instability"`
        (the step amplifies where the flow does not, or faster than it).
    - `unstable`: `classification == 2`, boolean. Only these are flagged.
    - `tol`: the allowance used for each eigenvalue.
    - `step_limits`: the largest stable step for each eigenvalue with this method
        (`inf`: none; `0`: no step is stable). See [`contdepth.stability_report`][].

    Totals:

    - `num_unstable`, `num_growth`: how many are classes 2 and 1.
    - `max_stable_step`: the minimum of `step_limits`.
    - `max_stable_steps`: `{method: its max_stable_step}` for every method in
        `("euler", "heun", "midpoint", "rk4")`.
    - `num_unstable_by_method`: `{method: its num_unstable at this step}`.
    - `method`, `step_size`, `growth_rtol`: the settings used.

    `print(report)` or `report.summary(horizon=T)` gives a readable table and a
    recommendation; `report.plot()` draws the eigenvalues over the stability region.
    Both need concrete values (not under `jit`).
    """

    eigenvalues: Complex[Array, " d"]
    amplification: Float[Array, " d"]
    flow_amplification: Float[Array, " d"]
    classification: Int[Array, " d"]
    unstable: Bool[Array, " d"]
    tol: Float[Array, " d"]
    step_limits: Float[Array, " d"]
    num_unstable: Int[Array, ""]
    num_growth: Int[Array, ""]
    max_stable_step: Float[Array, ""]
    max_stable_steps: dict[str, Float[Array, ""]]
    num_unstable_by_method: dict[str, Int[Array, ""]]
    method: Method = eqx.field(static=True)
    step_size: float = eqx.field(static=True)
    growth_rtol: float = eqx.field(static=True)

    def stable_methods(self) -> tuple[Method, ...]:
        """The methods stable at this step: no eigenvalue flagged, and the step within
        the method's `max_stable_steps` (which, unlike the flags, has no round-off
        allowance: RK2's `|R(ih b)| = 1 + (hb)^4/8` is below float32 resolution at
        `hb = 0.004`, yet no step is stable)."""
        # Bisection and eigenvalue round-off put a step on the boundary a few ulp
        # either side of it.
        slack = 1 + 64 * float(np.finfo(np.asarray(self.amplification).dtype).eps)
        return tuple(
            m
            for m in _COST_ORDER
            if int(self.num_unstable_by_method[m]) == 0
            and self.step_size <= float(self.max_stable_steps[m]) * slack
        )

    def suggested_method(self) -> Method:
        """This report's method if it is stable at this step; else the cheapest stable
        method; else the one with the largest stable step."""
        stable = self.stable_methods()
        if self.method in stable:
            return self.method
        if stable:
            return stable[0]
        limits = {m: float(v) for m, v in self.max_stable_steps.items()}
        return max(_COST_ORDER, key=lambda m: limits[m])  # first of the largest

    def summary(self, max_rows: int = 10, horizon: float | None = None) -> str:
        """A recommendation and a table of the `max_rows` eigenvalues with the largest
        `|R(z)|`. With `horizon=T`, step limits are also given as `num_steps`."""
        z = np.asarray(self.eigenvalues)
        amp = np.asarray(self.amplification)
        flow = np.asarray(self.flow_amplification)
        cls = np.asarray(self.classification)
        limits = np.asarray(self.step_limits)
        h, method = self.step_size, self.method
        n_bad, n_growth = int(self.num_unstable), int(self.num_growth)
        lines = [
            f"StabilityReport(method={method!r}, step_size={h:g}, d={z.size})",
            f"  {n_bad} of {z.size} eigenvalues z = h*lambda of h*J_F are a "
            f"discretisation instability, {n_growth} grow as the exact flow does, "
            f"{z.size - n_bad - n_growth} are stable; max |R(z)| = {amp.max():.8g}",
        ]
        lines += ["  " + line for line in self._advice(horizon)]
        lines.append(
            f"  {'z = h*lambda':>26}  {'|R(z)|':>12}  {'|e^z|':>10}  "
            f"{'h_max':>10}  class"
        )
        for i in np.argsort(-amp, kind="stable")[:max_rows]:
            zi = complex(z[i])
            lines.append(
                f"  {zi.real:12.5g} {zi.imag:+12.5g}j  {amp[i]:12.8g}  "
                f"{flow[i]:10.5g}  {limits[i]:10.4g}  {_CLASS_NAMES[cls[i]]}"
            )
        if z.size > max_rows:
            lines.append(f"  ... {z.size - max_rows} more")
        return "\n".join(lines)

    def _advice(self, horizon: float | None) -> list[str]:
        h, method = self.step_size, self.method
        limits = {m: float(v) for m, v in self.max_stable_steps.items()}
        counts = {m: int(n) for m, n in self.num_unstable_by_method.items()}

        def steps(limit):
            if horizon is None or not 0 < limit < np.inf:
                return ""
            n = math.ceil(horizon / limit)
            return f", i.e. num_steps >= {n} for T = {horizon:g}"

        lim = limits[method]
        stable = self.stable_methods()
        if method in stable:
            bound = "any step" if lim == np.inf else f"h <= {lim:.6g}"
            return [f"{method} is stable at h = {h:g} (stable for {bound})."]
        if counts[method] == 0:
            return [
                f"No eigenvalue is flagged at h = {h:g} (|R(z)| - 1 is within "
                f"round-off), but {method} is strictly stable only for "
                f"h <= {lim:.6g}."
            ]
        out = []
        z = np.asarray(self.eigenvalues)[np.asarray(self.unstable)]
        imaginary = bool(np.all(np.abs(np.real(z)) <= 1e-6 * np.abs(z)))
        if lim > 0:
            out.append(f"{method}: reduce the step to h <= {lim:.6g}{steps(lim)}.")
        elif imaginary:
            out.append(
                f"{method} is never stable for purely imaginary eigenvalues "
                "(rotations, antisymmetric weights): its region touches the imaginary "
                "axis only at 0."
            )
        else:
            out.append(f"{method} is not stable at any step for these eigenvalues.")
        others = [m for m in stable if m != method]
        if others:
            out.append(
                "Stable at this step: "
                + ", ".join(
                    f"{m} (up to h <= {limits[m]:.6g}{steps(limits[m])})"
                    for m in others
                )
                + "."
            )
        suggestion = self.suggested_method()
        if suggestion != method:
            r = limits[suggestion] * float(np.max(np.abs(z))) / h
            ray = (
                f"; on these purely imaginary eigenvalues that is |h lambda| <= {r:.3g}"
                if imaginary and np.isfinite(r)
                else ""
            )
            why = "" if suggestion in stable else " (the largest stable step here)"
            out.append(
                f"Suggestion: {suggestion!r}, stable up to "
                f"h <= {limits[suggestion]:.6g}{why}{ray}{steps(limits[suggestion])}."
            )
        return out

    def plot(self, ax=None, extent=None):
        """The method's stability region with the eigenvalues `z` overlaid, coloured by
        class, and the suggested method's region if it differs. Returns the axis."""
        plt = require("matplotlib.pyplot", extra="plot")

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 5))
        z = np.asarray(self.eigenvalues)
        cls = np.asarray(self.classification)
        if extent is None:
            x0, x1, y0, y1 = -3.5, 1.5, -3.5, 3.5
            if z.size:
                pad = 0.1 * max(1.0, float(np.max(np.abs(z))))
                x0, x1 = (
                    min(x0, np.real(z).min() - pad),
                    max(x1, np.real(z).max() + pad),
                )
                y0, y1 = (
                    min(y0, np.imag(z).min() - pad),
                    max(y1, np.imag(z).max() + pad),
                )
            extent = (x0, x1, y0, y1)
        suggestion = self.suggested_method()
        handles = []
        if suggestion != self.method:
            stability_region(suggestion, extent=extent).plot(ax=ax, colors=["C1"])
            handles.append(
                ax.fill(
                    [], [], color="C1", alpha=0.3, label=f"{suggestion} |R(z)| <= 1"
                )[0]
            )
        stability_region(self.method, extent=extent).plot(ax=ax, colors=["C0"])
        handles.insert(
            0,
            ax.fill([], [], color="C0", alpha=0.3, label=f"{self.method} |R(z)| <= 1")[
                0
            ],
        )
        for k, (name, colour, marker) in enumerate(
            zip(_CLASS_NAMES, ("C2", "C4", "C3"), ("o", "^", "x"))
        ):
            mask = cls == k
            if mask.any():
                handles.append(
                    ax.scatter(
                        np.real(z)[mask],
                        np.imag(z)[mask],
                        c=colour,
                        marker=marker,
                        zorder=3,
                        label=f"{name} ({int(mask.sum())})",
                    )
                )
        ax.set_title(f"z = h·eig(J_F), h = {self.step_size:g}, {self.method}")
        ax.legend(handles=handles, fontsize=7, loc="lower left")
        return ax

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
    t: RealScalarLike = 0.0,
    args: Args = None,
    tol: float | None = None,
    growth_rtol: float = 0.1,
) -> StabilityReport:
    """Linear stability of one explicit step at the state `y`: the eigenvalues
    `z = h lambda` of `h J_F(t, y)` (the dense field Jacobian, `jax.jacfwd`) against
    the method's absolute-stability region `|R(z)| <= 1`
    ([`contdepth.stability_function`][]) *and* against the exact flow `|e^z|`.

    Each eigenvalue is one of:

    - **stable**: `|R(z)| <= 1 + tol`.
    - **growth as the flow**: `|R(z)| > 1`, but `Re z > 0` so the exact flow grows too,
        and the step grows no faster: `|R(z)| <= |e^z|^(1 + growth_rtol) + tol`. Euler
        even under-amplifies growing real modes (`1 + z < e^z`). Not flagged: it is the
        field, not the discretisation.
    - **discretisation instability** (`unstable`): the step amplifies where the flow
        does not, or faster. E.g. for an antisymmetric `A` the flow `expm(tA)` is
        orthogonal, yet every forward-Euler step multiplies by
        `|1 + i h b| = sqrt(1 + h^2 b^2)`, so after `N` steps
        `sigma_max = (1 + h^2 b^2)^(N/2)`.

    **The largest stable step** of an eigenvalue `lambda` is the largest `h_max` such
    that every `0 < s <= h_max` keeps `|R(s lambda)| <= max(1, |e^{s lambda}|^(1 +
    growth_rtol))`. For `Re lambda < 0` that is where the ray `s lambda` first leaves
    the region (Euler, `lambda = -a`: `2/a`; RK4: `2.7853/a`); `0` when no step is
    stable (Euler or RK2 on purely imaginary `lambda`; RK4 is stable there for
    `|h lambda| <= 2 sqrt(2)`); `inf` when every step is. It is reported for this
    method and, in `max_stable_steps`, for every method, with a recommendation in
    `summary()`.

    This is a local (frozen-Jacobian) test: exact for linear fields, a guide for
    nonlinear ones.

    **Arguments:**

    - `field`: the vector field `F(t, y, args)`: any callable.
    - `y`: the state at which to linearise (flattened to `d = prod(y.shape)`).
    - `step_size`: the step `h > 0` (`horizon / num_steps` of an
        [`contdepth.EulerResNet`][]).
    - `method`: `"euler"`, `"heun"`, `"midpoint"` or `"rk4"`.
    - `t`: the time at which to linearise (a number, or a scalar array under `jit`).
    - `args`: forwarded to the field.
    - `tol`: an absolute allowance on `|R(z)|`, the same for every eigenvalue. The
        default is the round-off of each computed `|R(z)|`,
        `16 eps (P(|z|) + P'(|z|) ||hJ||_F)` with `P(r) = sum_j |c_j| r^j` from
        `R(z) = sum_j c_j z^j`: evaluating `R` costs `eps P(|z|)`, and the eigenvalue
        error `eps ||hJ||_F` of a backward-stable `eig` moves `|R|` by `|R'|` times it.
        Being relative to `z = h lambda`, it is about `16 eps` for a small step
        (`1.9e-6` in float32 at `h = 1e-3`, so a drift `|R| = 1 + 8e-6` is reported),
        where a
        fixed `1000 eps` (`1.2e-4`) would hide it. Pass a larger `tol` for defective
        (Jordan-block) Jacobians, whose eigenvalues are only `sqrt(eps)`-accurate.
    - `growth_rtol`: how much faster (in log scale) than the flow a growing mode may
        grow and still count as "growth as the flow". With `0`, RK4's `O(z^5)` excess
        over `e^z` on growing oscillatory modes would count as instability.

    **Returns:**

    A [`contdepth.StabilityReport`][].
    """
    check_field("field", field)
    check_field_state(field, y, args, "y")
    step_size = check_positive_float("step_size", step_size)
    check_choice("method", method, METHODS)
    if not isinstance(t, jax.core.Tracer):
        t = check_real("t", t)
    if tol is not None:
        tol = check_nonnegative_float("tol", tol)
    growth_rtol = check_nonnegative_float("growth_rtol", growth_rtol)
    t, h = jnp.asarray(t, y.dtype), jnp.asarray(step_size, y.dtype)
    # Every method is analysed in one compiled call (the method is not static, so a
    # second method on the same field does not recompile); this one is picked here.
    z, amps, tols, classes, limits = _analyse(field, y, t, h, args, tol, growth_rtol)
    k = METHODS.index(method)
    unstable = classes[k] == UNSTABLE
    return StabilityReport(
        eigenvalues=z,
        amplification=amps[k],
        flow_amplification=jnp.exp(z.real),
        classification=classes[k],
        unstable=unstable,
        tol=tols[k],
        step_limits=limits[k],
        num_unstable=jnp.sum(unstable),
        num_growth=jnp.sum(classes[k] == GROWTH),
        max_stable_step=jnp.min(limits[k], initial=jnp.inf),
        max_stable_steps={
            m: jnp.min(limits[i], initial=jnp.inf) for i, m in enumerate(METHODS)
        },
        num_unstable_by_method={
            m: jnp.sum(classes[i] == UNSTABLE) for i, m in enumerate(METHODS)
        },
        method=method,
        step_size=step_size,
        growth_rtol=growth_rtol,
    )


@eqx.filter_jit
def _analyse(field, y, t, h, args, tol, growth_rtol):
    shape = y.shape

    def flat_field(x):
        return jnp.reshape(field(t, x.reshape(shape), args), (-1,))

    hj = h * jax.jacfwd(flat_field)(jnp.reshape(y, (-1,)))
    z = jnp.linalg.eigvals(hj)
    norm_hj = jnp.linalg.norm(hj)
    z_snapped = snap_to_imaginary_axis(z, norm_hj)

    def analyse_method(coefficients):
        amp = amplification_of(coefficients, z)
        tol_m = (
            roundoff_tolerance(coefficients, z, norm_hj)
            if tol is None
            else jnp.full(z.shape, tol, amp.dtype)
        )
        cls = classify(amp, z, tol_m, growth_rtol)
        limits = max_stable_steps(coefficients, z_snapped, h, growth_rtol)
        return amp, tol_m, cls, limits

    return (z, *jax.vmap(analyse_method)(padded_coefficients(METHODS)))
