"""The numbers behind [`contdepth.stability_report`][]: a round-off tolerance for
`|R(z)|`, the three-way classification of `z = h lambda` against the exact flow, and
the largest stable step of a method along the ray `h lambda`, `h > 0`.

All of it is `jax.numpy` on arrays of eigenvalues, so it runs under `jit` and `vmap`.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float, Int

from .._step_rule import horner, stability_coefficients


STABLE, GROWTH, UNSTABLE = 0, 1, 2
CLASS_NAMES = ("stable", "growth as the flow", "discretisation instability")

# Multiplies eps in the default tolerance. LAPACK's eigenvalues are backward stable with
# a modest constant; 16 absorbs it with margin, yet keeps the float32 tolerance near
# 2e-6 for |z| << 1, so a drift |R| = 1 + 8e-6 per step is still reported.
_ROUNDOFF_FACTOR = 16.0
# Rays are searched on [0, _RADIUS_CAP]: every region here lies in |z| <= 2.96 (RK4).
_RADIUS_CAP = 10.0
_GRID = 512
_BISECTIONS = 64


def padded_coefficients(methods: tuple[str, ...]) -> Float[Array, "methods 5"]:
    """`stability_coefficients` of each method, zero-padded to degree 4, so that one
    `vmap` over methods analyses all of them (one trace instead of four)."""
    rows = [stability_coefficients(m) for m in methods]
    width = max(len(r) for r in rows)
    return jnp.asarray([list(r) + [0.0] * (width - len(r)) for r in rows])


def amplification_of(
    coefficients: Float[Array, " p"], z: Complex[Array, " d"]
) -> Float[Array, " d"]:
    """`|R(z)|` by Horner's rule, in `z`'s precision."""
    return jnp.abs(horner(coefficients.astype(z.real.dtype), z))


def roundoff_tolerance(
    coefficients: Float[Array, " p"], z: Complex[Array, " d"], norm_hj: Float[Array, ""]
) -> Float[Array, " d"]:
    """Round-off allowance for each computed `|R(z)|`.

    `c eps (P(|z|) + P'(|z|) ||hJ||_F)`, with `P(r) = sum_j |c_j| r^j` built from
    `R(z) = sum_j c_j z^j`: the first term bounds the error of evaluating `R` (Horner),
    the second propagates the eigenvalue error `|dz| <~ eps ||hJ||_F` (backward-stable
    `eig`) through `R'`. It is relative to the step through `z = h lambda`, so for a
    small step it is a few `eps` -- not the `1000 eps` that hid `|R| = 1 + 8e-6` at
    `h = 1e-3` in float32. Defective (Jordan-block) Jacobians have eigenvalue errors
    up to `sqrt(eps)`: pass an explicit `tol` for those.
    """
    eps = jnp.finfo(z.real.dtype).eps
    r, c = jnp.abs(z), jnp.abs(coefficients).astype(z.real.dtype)
    value = sum(c[j] * r**j for j in range(c.shape[0]))
    slope = sum(j * c[j] * r ** (j - 1) for j in range(1, c.shape[0]))
    return _ROUNDOFF_FACTOR * eps * (value + slope * norm_hj)


def classify(
    amplification: Float[Array, " d"],
    z: Complex[Array, " d"],
    tol: Float[Array, " d"],
    growth_rtol: float,
) -> Int[Array, " d"]:
    """`STABLE` if `|R| <= 1 + tol`; else `GROWTH` if `|R| <= |e^z|^(1 + growth_rtol) +
    tol` (the exact flow grows too, and the step grows at most `1 + growth_rtol` times
    as fast in log scale); else `UNSTABLE`."""
    flow_bound = jnp.maximum(1.0, jnp.exp((1 + growth_rtol) * z.real))
    return jnp.where(
        amplification <= 1 + tol,
        STABLE,
        jnp.where(amplification <= flow_bound + tol, GROWTH, UNSTABLE),
    )


def snap_to_imaginary_axis(
    z: Complex[Array, " d"], norm_hj: Float[Array, ""]
) -> Complex[Array, " d"]:
    """Zero real parts that are eigenvalue round-off (`|Re z| <= c eps ||hJ||_F`).

    An antisymmetric Jacobian's eigenvalues come back with `Re z ~ +-1e-17`; unsnapped,
    Euler's largest stable step would be `~1e-17` instead of 0, and the sign of the
    round-off would decide RK4's.
    """
    eps = jnp.finfo(z.real.dtype).eps
    return jnp.where(
        jnp.abs(z.real) <= _ROUNDOFF_FACTOR * eps * norm_hj, 1j * z.imag, z
    )


def max_stable_steps(
    coefficients: Float[Array, " p"],
    z: Complex[Array, " d"],
    step_size: Float[Array, ""],
    growth_rtol: float,
) -> Float[Array, " d"]:
    """For each eigenvalue `lambda = z / h`, the largest `h_max` such that every step
    `0 < s <= h_max` keeps `|R(s lambda)| <= max(1, |e^{s lambda}|^(1 + growth_rtol))`.

    For `Re lambda < 0` this is the first crossing of the region's boundary along the
    ray, `|R(h_max lambda)| = 1` (Euler, `lambda = -a`: `2 / a`); `inf` if the ray
    never leaves (growing real modes, `lambda = 0`); `0` if it leaves at once (Euler or
    RK2 with `Re lambda = 0`, or an exit before `|s lambda| = 7.5e-8`). Found on a grid
    of `|s lambda|` in `(0, 10]` refined by bisection.
    """
    radius = jnp.abs(z)
    theta = jnp.where(radius > 0, z / jnp.where(radius > 0, radius, 1), 1.0)
    exit_radius = _exit_radius(coefficients, theta, growth_rtol)
    return jnp.where(radius > 0, exit_radius * step_size / radius, jnp.inf)


def _exit_radius(coefficients, theta, growth_rtol):
    # |R(r theta)|^2 - 1 = r Q(r), Q(r) = sum_{m>=1} q_m r^(m-1), with
    # q_m = sum_{j+k=m} c_j c_k Re(theta^j conj(theta)^k): the constant 1 is cancelled
    # exactly, so the sign near r = 0 is not lost to round-off.
    p = coefficients.shape[0] - 1
    coefficients = coefficients.astype(theta.real.dtype)
    powers = [jnp.ones_like(theta)]
    for _ in range(p):
        powers.append(powers[-1] * theta)
    q = []
    for m in range(1, 2 * p + 1):
        terms = [
            coefficients[j]
            * coefficients[m - j]
            * (powers[j] * jnp.conj(powers[m - j]))
            for j in range(max(0, m - p), min(m, p) + 1)
        ]
        q.append(jnp.real(sum(terms))[None, :])
    rate = 2 * (1 + growth_rtol) * jnp.maximum(theta.real, 0.0)[None, :]

    def outside(r):  # r > 0 of shape (n, d): rows of radii, one column per theta
        quotient = q[-1]
        for q_m in reversed(q[:-1]):
            quotient = quotient * r + q_m
        # (|e^{r theta}|^(2 (1 + rtol)) - 1) / r, or 0 where the flow does not grow.
        allowed = jnp.where(rate > 0, jnp.expm1(rate * r) / r, 0.0)
        return quotient > allowed

    dtype = theta.real.dtype
    grid = _RADIUS_CAP * (jnp.arange(1, _GRID + 1, dtype=dtype) / _GRID) ** 3
    out = outside(jnp.broadcast_to(grid[:, None], (_GRID, theta.shape[0])))
    any_out = jnp.any(out, axis=0)
    first = jnp.argmax(out, axis=0)
    hi = grid[first]
    lo = grid[jnp.maximum(first - 1, 0)]

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        mid_out = outside(mid[None, :])[0]
        return jnp.where(mid_out, lo, mid), jnp.where(mid_out, mid, hi)

    lo, _ = jax.lax.fori_loop(0, _BISECTIONS, bisect, (lo, hi))
    # An exit before the first grid point, |s lambda| < 7.5e-8, is no usable step
    # (and |R|^2 - 1 ~ r^4 underflows there in float32): report 0.
    lo = jnp.where(first > 0, lo, 0.0)
    return jnp.where(any_out, lo, jnp.inf)
