"""Scaling regimes of residual networks at initialisation: how the residual scale
`L^{-beta}` and the regularity of the weights across depth decide between explosion,
a random (SDE-like) limit and the identity.

The network is `h_{k+1} = h_k + L^{-beta} A_k relu(h_k)`, `k = 0, ..., L-1`, `h in R^d`
(the one-matrix branch `A relu(h)`; ReLU makes the map positively homogeneous, so
`||h_L - h_0|| / ||h_0||` does not depend on `||h_0||`, and exploding norms are tracked
in log space without overflow).

- i.i.d. weights, `A_k` entries `N(0, 1/d)` (Cohen, Cont, Rossier & Xu 2021, "Scaling
  properties of deep residual networks", ICML; Marion, Fermanian, Biau & Vert 2025,
  "Scaling ResNets in the large-depth regime", JMLR): for `beta < 1/2` the output
  explodes as `L` grows, `beta = 1/2` keeps it `O(1)` and random (a neural SDE limit),
  `beta > 1/2` tends to the identity with `||h_L - h_0|| / ||h_0|| ~ L^{1/2 - beta}`.
- Weights correlated across depth (Marion et al. 2025 vary the regularity of the
  weights in the layer index with fractional Brownian motion): here each entry of
  `sqrt(d) A_k`, as a sequence in `k`, is unit-variance fractional Gaussian noise of
  Hurst index `H` (the increments of `B_H` on the grid `k / L`, rescaled by `L^H`), so
  every `A_k` has the i.i.d. marginal law and only the correlation across depth
  changes. What we implement and measure: to first order
  `h_L - h_0 ~ L^{-beta} (sum_k A_k) relu(h_0)` and `Var(sum_k sqrt(d) A_k[i, j]) =
  L^{2H}`, so `||h_L - h_0|| / ||h_0|| ~ L^{H - beta}`: the critical line is
  `beta = H` (`H = 1/2`: the i.i.d. `beta = 1/2`; `H -> 1`, smooth weights: the Neural
  ODE scaling `beta = 1`, as the JMLR abstract states for correlated initialisations).
"""

import argparse
import dataclasses
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._argtypes import float_list, int_list
from .._depth.regularity import scaling_exponent, ScalingFit
from .._jacobian.dense import jacobian
from .._optional import require
from .._outputs import write_figure_and_record
from .._validation import check_key, check_positive_int
from .smooth_stays_smooth import fit_record


BETAS = (0.25, 0.5, 0.75, 1.0)
DEPTHS = (4, 8, 16, 32, 64, 128, 256, 512, 1024)
HEATMAP_BETAS = tuple(round(0.1 * i, 1) for i in range(11))
HEATMAP_HURSTS = tuple(round(0.1 * i, 1) for i in range(1, 10))
DIM = 16


# ---------------------------------------------------------- fractional Brownian motion


def _check_hurst(hurst) -> float:
    h = float(hurst)
    if not 0 < h < 1:
        raise ValueError(
            f"`hurst` must lie strictly between 0 and 1, got {h} (H = 1 is a random "
            "straight line, whose covariance is singular; use e.g. 0.99)."
        )
    return h


def fbm_covariance(num_points: int, hurst: float) -> np.ndarray:
    """The covariance `(n, n)` of `B_H(k / n)`, `k = 1, ..., n`, in float64:
    `(s^{2H} + t^{2H} - |t - s|^{2H}) / 2`.

    **Arguments:**

    - `num_points`: `n >= 1`.
    - `hurst`: `H` in `(0, 1)`.

    **Returns:**

    A NumPy float64 array of shape `(num_points, num_points)`.
    """
    n = check_positive_int("num_points", num_points)
    h2 = 2 * _check_hurst(hurst)
    t = np.arange(1, n + 1, dtype=np.float64) / n
    return 0.5 * (
        t[:, None] ** h2 + t[None, :] ** h2 - np.abs(t[:, None] - t[None, :]) ** h2
    )


def fgn_transform(num_steps: int, hurst: float) -> np.ndarray:
    """The float64 matrix `T` `(n, n)` such that `T @ z`, `z ~ N(0, I_n)`, is unit
    variance fractional Gaussian noise: `n^H (B_H(k/n) - B_H((k-1)/n))`, `k = 1..n`
    (the Cholesky factor of
    [`fbm_covariance`][contdepth.experiments.fbm_covariance], differenced and
    rescaled)."""
    n = check_positive_int("num_steps", num_steps)
    h = _check_hurst(hurst)
    chol = np.linalg.cholesky(fbm_covariance(n, h))
    diff = np.eye(n) - np.eye(n, k=-1)
    return (n**h) * (diff @ chol)


def fractional_brownian_motion(
    key: PRNGKeyArray, num_points: int, hurst: float, shape: tuple[int, ...] = ()
) -> Float[Array, " num_points *shape"]:
    """Exact samples of fractional Brownian motion `B_H` at `t_k = k / n`,
    `k = 1, ..., n` (`B_H(0) = 0` is left out), independently for every entry of
    `shape`.

    Computed as `C^{1/2} z`: `C^{1/2}` the (float64) Cholesky factor of
    [`fbm_covariance`][contdepth.experiments.fbm_covariance], `z ~ N(0, I)`.

    **Arguments:**

    - `key`: a `jax.random.PRNGKey`.
    - `num_points`: `n >= 1`, the number of grid points in `(0, 1]`.
    - `hurst`: the Hurst index `H` in `(0, 1)` (a Python number: the factor is
        computed once, outside `jit`); `1/2` is Brownian motion.
    - `shape`: the shape of the independent paths (e.g. a weight matrix's `(d, d)`).

    **Returns:**

    An array of shape `(num_points, *shape)` in the default float dtype.

    References: Mandelbrot & Van Ness 1968, "Fractional Brownian motions, fractional
    noises and applications"; Marion, Fermanian, Biau & Vert 2025, "Scaling ResNets in
    the large-depth regime" (JMLR).
    """
    check_key("key", key)
    n = check_positive_int("num_points", num_points)
    shape = tuple(check_positive_int("shape[i]", s) for s in shape)
    dtype = jnp.result_type(float)
    chol = jnp.asarray(np.linalg.cholesky(fbm_covariance(n, hurst)), dtype)
    z = jr.normal(key, (n, math.prod(shape)), dtype)
    return (chol @ z).reshape(n, *shape)


def fractional_gaussian_noise(
    key: PRNGKeyArray, num_steps: int, hurst: float, shape: tuple[int, ...] = ()
) -> Float[Array, " num_steps *shape"]:
    """Unit-variance fractional Gaussian noise: the increments of
    [`fractional_brownian_motion`][contdepth.experiments.fractional_brownian_motion]
    on `n` steps, rescaled by `n^H`. Each entry is `N(0, 1)`; the entries of one path
    are correlated across steps as `B_H`'s increments are (independent for
    `H = 1/2`).

    **Arguments:**

    - `key`: a `jax.random.PRNGKey`.
    - `num_steps`: `n >= 1`.
    - `hurst`: `H` in `(0, 1)`.
    - `shape`: the shape of the independent paths.

    **Returns:**

    An array of shape `(num_steps, *shape)`.
    """
    check_key("key", key)
    n = check_positive_int("num_steps", num_steps)
    shape = tuple(check_positive_int("shape[i]", s) for s in shape)
    dtype = jnp.result_type(float)
    z = jr.normal(key, (n, math.prod(shape)), dtype)
    return (jnp.asarray(fgn_transform(n, hurst), dtype) @ z).reshape(n, *shape)


# ---------------------------------------------------------------------------- network


class _ReluResidualStack(eqx.Module):
    """`h_{k+1} = h_k + scale[k] A_k relu(h_k)` as a callable `(y, args) -> y`, for
    [`contdepth.jacobian`][]. A layer with `scale[k] = 0` is the identity (padding)."""

    A: Float[Array, "L d d"]
    scale: Float[Array, " L"]

    def __call__(self, y, args=None):
        def layer(h, a_s):
            A_k, s_k = a_s
            return h + s_k * (A_k @ jax.nn.relu(h)), None

        h, _ = jax.lax.scan(layer, y, (self.A, self.scale))
        return h


def _log_ratio(A, scale, h0):
    """`log(||h_L - h_0|| / ||h_0||)`, renormalising the state after every layer (the
    map is positively homogeneous) so that no norm overflows."""

    def layer(carry, a_s):
        u, log_norm = carry
        A_k, s_k = a_s
        v = u + s_k * (A_k @ jax.nn.relu(u))
        n = jnp.linalg.norm(v)
        return (v / n, log_norm + jnp.log(n)), None

    u0 = h0 / jnp.linalg.norm(h0)
    (u, log_norm), _ = jax.lax.scan(layer, (u0, jnp.zeros((), h0.dtype)), (A, scale))
    # h_L / ||h_0|| = e^{log_norm} u; factor out the larger of e^{log_norm} and 1.
    shrink = jnp.exp(-jnp.abs(log_norm))
    grown = log_norm + jnp.log(jnp.linalg.norm(u - shrink * u0))
    shrunk = jnp.log(jnp.linalg.norm(shrink * u - u0))
    return jnp.where(log_norm >= 0, grown, shrunk)


def _scales(depths, betas, pad):
    """`(len(depths), len(betas), pad)`: `L^{-beta}` on the first `L` layers, `0` on
    the padding."""
    L = np.asarray(depths, np.float64)[:, None, None]
    beta = np.asarray(betas, np.float64)[None, :, None]
    k = np.arange(pad)[None, None, :]
    return np.where(k < L, L ** (-beta), 0.0)


# ------------------------------------------------------------- i.i.d. weights: depth


@eqx.filter_jit
def _depth_program(key, scales, *, num_keys, pad, dim):
    k_a, k_h = jr.split(key)
    A = jr.normal(k_a, (num_keys, pad, dim, dim)) / math.sqrt(dim)
    h0 = jr.normal(k_h, (num_keys, dim))

    def one(scale, A, h0):
        jac = jacobian(_ReluResidualStack(A, scale), h0, mode="fwd")
        return _log_ratio(A, scale, h0), jnp.linalg.svd(jac, compute_uv=False)[0]

    over_keys = jax.vmap(one, in_axes=(None, 0, 0))
    over_betas = jax.vmap(over_keys, in_axes=(0, None, None))
    return jax.vmap(over_betas, in_axes=(0, None, None))(scales, A, h0)


@dataclasses.dataclass(frozen=True)
class DepthScalingResult:
    """What [`run_depth_scaling`][contdepth.experiments.run_depth_scaling] returns;
    arrays `[depth, beta, key]`.

    - `log_ratio`: `log(||h_L - h_0|| / ||h_0||)` (natural log).
    - `sigma_max`: the largest singular value of the end-to-end Jacobian
        `d h_L / d h_0`.
    - `fits`: per `beta`, the [`contdepth.ScalingFit`][] of the geometric mean (over
        keys) of the ratio `||h_L - h_0|| / ||h_0||` against `L`, and `expected_slope`:
        `1/2 - beta` where the theory gives a power law (`beta >= 1/2`), else `None`.
    """

    depths: tuple[int, ...]
    betas: tuple[float, ...]
    log_ratio: np.ndarray
    sigma_max: np.ndarray
    fits: dict[float, ScalingFit]
    expected_slope: dict[float, float | None]
    settings: dict[str, Any]
    seconds: float


def _mean_se(x, axis=-1):
    x = np.asarray(x, np.float64)
    return x.mean(axis), x.std(axis, ddof=1) / np.sqrt(x.shape[axis])


def run_depth_scaling(
    depths: Sequence[int] = DEPTHS,
    betas: Sequence[float] = BETAS,
    *,
    key: PRNGKeyArray,
    num_keys: int = 32,
    dim: int = DIM,
) -> DepthScalingResult:
    """Measure `||h_L - h_0|| / ||h_0||` and the end-to-end Jacobian's `sigma_max`
    against the depth `L` for every residual scale `L^{-beta}`, i.i.d. weights
    `A_k ~ N(0, 1/d)` entrywise, `h_0 ~ N(0, I_d)`.

    One compiled program for everything: the depth-`L` network uses the first `L`
    layers of one draw of `max(depths)` layers, the rest scaled by `0` (identity).

    **Arguments:**

    - `depths`: at least 3 distinct depths `L >= 1`.
    - `betas`: the exponents `beta`.
    - `key`: a `jax.random.PRNGKey` (weights and inputs of all `num_keys` repeats).
    - `num_keys`: independent networks and inputs per `(L, beta)`.
    - `dim`: the width `d`.

    **Returns:**

    A [`DepthScalingResult`][contdepth.experiments.DepthScalingResult].

    References: Cohen, Cont, Rossier & Xu 2021 (ICML); Marion, Fermanian, Biau & Vert
    2025, "Scaling ResNets in the large-depth regime" (JMLR).
    """
    check_key("key", key)
    depths = tuple(check_positive_int("depths[i]", L) for L in depths)
    if len(set(depths)) < 3:
        raise ValueError(
            f"`depths` must hold at least 3 distinct depths, got {depths}."
        )
    betas = tuple(float(b) for b in betas)
    num_keys = check_positive_int("num_keys", num_keys)
    if num_keys < 2:
        raise ValueError(
            f"`num_keys` must be >= 2 for a standard error, got {num_keys}."
        )
    dim = check_positive_int("dim", dim)
    start = time.perf_counter()
    pad = max(depths)
    scales = jnp.asarray(_scales(depths, betas, pad), jnp.result_type(float))
    log_ratio, sigma = _depth_program(key, scales, num_keys=num_keys, pad=pad, dim=dim)
    log_ratio, sigma = np.asarray(log_ratio), np.asarray(sigma)
    seconds = time.perf_counter() - start
    fits, expected = {}, {}
    for b, beta in enumerate(betas):
        # The geometric mean over keys: robust to the heavy upper tail of exploding
        # networks, and the quantity the plot shows.
        fits[beta] = scaling_exponent(depths, np.exp(log_ratio[:, b].mean(axis=1)))
        expected[beta] = 0.5 - beta if beta >= 0.5 else None
    settings = dict(
        depths=list(depths),
        betas=list(betas),
        num_keys=num_keys,
        dim=dim,
        network="h_{k+1} = h_k + L^{-beta} A_k relu(h_k)",
        weights="A_k i.i.d., entries N(0, 1/d)",
        h0="N(0, I_d)",
        dtype=str(jnp.result_type(float)),
    )
    return DepthScalingResult(
        depths=depths,
        betas=betas,
        log_ratio=log_ratio,
        sigma_max=sigma,
        fits=fits,
        expected_slope=expected,
        settings=settings,
        seconds=seconds,
    )


# ------------------------------------------------------------ Hurst index x beta map


@eqx.filter_jit
def _heatmap_program(key, transforms, log_depth, betas, *, num_keys, depth, dim):
    k_z, k_h = jr.split(key)
    # Common random numbers: one white noise, correlated differently for each H.
    z = jr.normal(k_z, (num_keys, depth, dim * dim))
    h0 = jr.normal(k_h, (num_keys, dim))

    def one(transform, beta, z, h0):
        A = (transform @ z).reshape(depth, dim, dim) / math.sqrt(dim)
        scale = jnp.full((depth,), jnp.exp(-beta * log_depth))
        return _log_ratio(A, scale, h0)

    over_keys = jax.vmap(one, in_axes=(None, None, 0, 0))
    over_betas = jax.vmap(over_keys, in_axes=(None, 0, None, None))
    return jax.vmap(over_betas, in_axes=(0, None, None, None))(transforms, betas, z, h0)


@dataclasses.dataclass(frozen=True)
class HurstHeatmapResult:
    """What [`run_hurst_heatmap`][contdepth.experiments.run_hurst_heatmap] returns;
    arrays `[hurst, beta, key]`.

    - `log10_ratio`: `log10(||h_L - h_0|| / ||h_0||)` at depth `depth`.
    - `critical_beta`: per Hurst index, the `beta` where the mean `log10_ratio`
        crosses the value it has on the i.i.d. line `(H, beta) = (1/2, 1/2)`, by
        linear interpolation in `beta` (`nan` if it does not cross); the theory's
        critical line is `beta = H`.
    """

    hursts: tuple[float, ...]
    betas: tuple[float, ...]
    depth: int
    log10_ratio: np.ndarray
    critical_beta: np.ndarray
    settings: dict[str, Any]
    seconds: float


def _crossing(betas, values, level):
    """The first `beta` where `values` (decreasing in beta) falls below `level`."""
    for i in range(len(betas) - 1):
        a, b = values[i] - level, values[i + 1] - level
        if a >= 0 > b:
            return betas[i] + (betas[i + 1] - betas[i]) * a / (a - b)
    return float("nan")


def run_hurst_heatmap(
    hursts: Sequence[float] = HEATMAP_HURSTS,
    betas: Sequence[float] = HEATMAP_BETAS,
    *,
    key: PRNGKeyArray,
    depth: int = 256,
    num_keys: int = 16,
    dim: int = DIM,
) -> HurstHeatmapResult:
    """`log10(||h_L - h_0|| / ||h_0||)` over a grid of Hurst indices `H` of the
    weights across depth and residual exponents `beta`, at one depth `L`.

    Weights: `sqrt(d) A_k[i, j] = ` unit-variance fractional Gaussian noise in `k`
    ([`fractional_gaussian_noise`][contdepth.experiments.fractional_gaussian_noise],
    exact by Cholesky), independent over `(i, j)`;
    every cell reuses the same white noise (common random numbers), so the map is
    smooth in `H` and `beta`.

    **Arguments:**

    - `hursts`: Hurst indices in `(0, 1)`.
    - `betas`: exponents `beta` (at least 2).
    - `key`: a `jax.random.PRNGKey`.
    - `depth`: `L`.
    - `num_keys`: independent networks and inputs per cell.
    - `dim`: the width `d`.

    **Returns:**

    A [`HurstHeatmapResult`][contdepth.experiments.HurstHeatmapResult].

    Reference: Marion, Fermanian, Biau & Vert 2025, "Scaling ResNets in the
    large-depth regime" (JMLR).
    """
    check_key("key", key)
    hursts = tuple(_check_hurst(h) for h in hursts)
    betas = tuple(float(b) for b in betas)
    if len(betas) < 2:
        raise ValueError(f"`betas` must hold at least 2 values, got {betas}.")
    depth = check_positive_int("depth", depth)
    num_keys = check_positive_int("num_keys", num_keys)
    if num_keys < 2:
        raise ValueError(
            f"`num_keys` must be >= 2 for a standard error, got {num_keys}."
        )
    dim = check_positive_int("dim", dim)
    start = time.perf_counter()
    dtype = jnp.result_type(float)
    transforms = jnp.asarray(np.stack([fgn_transform(depth, h) for h in hursts]), dtype)
    log_ratio = _heatmap_program(
        key,
        transforms,
        math.log(depth),
        jnp.asarray(betas, dtype),
        num_keys=num_keys,
        depth=depth,
        dim=dim,
    )
    log10_ratio = np.asarray(log_ratio, np.float64) / math.log(10)
    seconds = time.perf_counter() - start
    # The level of the i.i.d. critical point (H, beta) = (1/2, 1/2) at this depth.
    iid = None
    if 0.5 in hursts and 0.5 in betas:
        iid = float(log10_ratio[hursts.index(0.5), betas.index(0.5)].mean())
    run_level = 0.0 if iid is None else iid
    mean = log10_ratio.mean(axis=2)
    critical = np.array([_crossing(betas, row, run_level) for row in mean])
    settings = dict(
        hursts=list(hursts),
        betas=list(betas),
        depth=depth,
        num_keys=num_keys,
        dim=dim,
        network="h_{k+1} = h_k + L^{-beta} A_k relu(h_k)",
        weights="sqrt(d) A_k[i, j] = unit-variance fractional Gaussian noise of Hurst "
        "index H in k (exact, Cholesky of the fBm covariance), independent over (i, j)",
        critical_level_log10=run_level,
        critical_level_from="mean log10 ratio at (H, beta) = (1/2, 1/2)"
        if iid is not None
        else "0 (ratio 1)",
        theory="||h_L - h_0|| / ||h_0|| ~ L^{H - beta}: critical line beta = H",
        dtype=str(dtype),
    )
    return HurstHeatmapResult(
        hursts=hursts,
        betas=betas,
        depth=depth,
        log10_ratio=log10_ratio,
        critical_beta=critical,
        settings=settings,
        seconds=seconds,
    )


# -------------------------------------------------------------------------- plotting


def plot_scaling_regimes(
    depth_result: DepthScalingResult,
    heatmap: HurstHeatmapResult,
    path: str | os.PathLike | None = None,
):
    """Save three panels: mean ± s.e. of `log10(||h_L - h_0|| / ||h_0||)` and of
    `log10 sigma_max` against `L` per `beta` (i.i.d. weights, with the fitted power
    laws), and the `(H, beta)` heat map of `log10(||h_L - h_0|| / ||h_0||)` with the
    critical line `beta = H` and the measured crossings; saved to `path` when given.
    Returns the figure."""
    plt = require("matplotlib.pyplot", extra="plot")

    r = depth_result
    depths = np.asarray(r.depths, dtype=float)
    fig, (ax_r, ax_s, ax_h) = plt.subplots(1, 3, figsize=(17, 4.8))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(r.betas)))
    for b, (beta, color) in enumerate(zip(r.betas, colors)):
        m, se = _mean_se(r.log_ratio[:, b] / math.log(10))
        fit = r.fits[beta]
        ax_r.errorbar(
            depths,
            m,
            yerr=se,
            fmt="o",
            color=color,
            ms=4,
            capsize=2,
            label=f"beta={beta:g}: slope {fit.slope:.3f} ± {fit.slope_stderr:.3f}",
        )
        ax_r.plot(
            depths,
            (fit.intercept + fit.slope * np.log(depths)) / math.log(10),
            "-",
            color=color,
            lw=0.8,
        )
        m, se = _mean_se(np.log10(r.sigma_max[:, b]))
        ax_s.errorbar(
            depths,
            m,
            yerr=se,
            fmt="o-",
            color=color,
            ms=4,
            capsize=2,
            label=f"beta={beta:g}",
        )
    ax_r.set(
        xscale="log",
        xlabel="depth L",
        ylabel="log10 ||h_L - h_0|| / ||h_0||",
        title="i.i.d. weights: output (mean ± s.e. over keys, fit)",
    )
    ax_r.legend(fontsize=8)
    ax_s.set(
        xscale="log",
        xlabel="depth L",
        ylabel="log10 sigma_max(dh_L/dh_0)",
        title="i.i.d. weights: end-to-end Jacobian",
    )
    ax_s.legend(fontsize=8)
    h = heatmap
    mean = h.log10_ratio.mean(axis=2)
    hs, bs = np.asarray(h.hursts), np.asarray(h.betas)
    # Symmetric about 0 by the identity side: the exploding side saturates.
    limit = max(1.0, float(-mean.min()))
    image = ax_h.pcolormesh(
        hs, bs, mean.T, shading="nearest", cmap="RdBu_r", vmin=-limit, vmax=limit
    )
    fig.colorbar(
        image,
        ax=ax_h,
        extend="max",
        label=f"log10 ||h_L - h_0|| / ||h_0|| (max {mean.max():.1f})",
    )
    line = np.linspace(min(hs.min(), bs.min()), max(hs.max(), bs.max()), 2)
    ax_h.plot(line, line, "k--", label="theory: beta = H")
    ax_h.plot(hs, h.critical_beta, "ko", ms=4, label="measured crossing")
    ax_h.set(
        xlabel="Hurst index H of the weights across depth",
        ylabel="beta",
        title=f"fGn weights, L = {h.depth}",
        xlim=(hs.min() - 0.05, hs.max() + 0.05),
        ylim=(bs.min() - 0.05, bs.max() + 0.05),
    )
    ax_h.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


# ------------------------------------------------------------------------------- CLI


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `scaling-regimes` subcommand to an `argparse` subparsers object."""
    parser = subparsers.add_parser(
        "scaling-regimes",
        help="explosion / SDE / identity regimes of h_{k+1} = h_k + L^-beta A_k "
        "relu(h_k) at initialisation, over beta, depth and the weights' Hurst index",
        description=(
            "Cohen et al. 2021; Marion, Fermanian, Biau & Vert 2025 (JMLR).\n"
            "With i.i.d. weights, measure ||h_L - h_0||/||h_0|| and the end-to-end\n"
            "Jacobian's sigma_max against L for each beta (theory: beta < 1/2\n"
            "explodes, 1/2 stays O(1), beta > 1/2 -> identity like L^(1/2 - beta));\n"
            "with fractional-Gaussian weights of Hurst index H across depth, map\n"
            "log10 of the ratio over (H, beta) at one depth (critical line\n"
            "beta = H). Writes "
            "scaling_regimes.json and scaling_regimes.png to --out."
        ),
    )
    parser.add_argument(
        "--depths",
        type=int_list,
        default=list(DEPTHS),
        help="depths L of the i.i.d. panels, comma-separated",
    )
    parser.add_argument(
        "--betas",
        type=float_list,
        default=list(BETAS),
        help="exponents beta of the i.i.d. panels",
    )
    parser.add_argument(
        "--keys", type=int, default=32, help="independent networks per (L, beta)"
    )
    parser.add_argument(
        "--heatmap-depth", type=int, default=256, help="depth L of the (H, beta) map"
    )
    parser.add_argument(
        "--heatmap-keys",
        type=int,
        default=16,
        help="independent networks per (H, beta) cell",
    )
    parser.add_argument("--dim", type=int, default=DIM, help="width d")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed")
    parser.add_argument(
        "--out", metavar="DIR", default="contdepth-out/scaling", help="output directory"
    )
    parser.set_defaults(func=run)
    return parser


def _record(r: DepthScalingResult, h: HurstHeatmapResult) -> dict[str, Any]:
    ratio_m, ratio_se = _mean_se(np.exp(r.log_ratio))
    log_m, log_se = _mean_se(r.log_ratio / math.log(10))
    sig_m, sig_se = _mean_se(r.sigma_max)
    heat_m, heat_se = _mean_se(h.log10_ratio)
    depth_panels = {
        f"beta={beta:g}": {
            "depths": list(r.depths),
            "ratio_mean": ratio_m[:, b].tolist(),
            "ratio_se": ratio_se[:, b].tolist(),
            "log10_ratio_mean": log_m[:, b].tolist(),
            "log10_ratio_se": log_se[:, b].tolist(),
            "sigma_max_mean": sig_m[:, b].tolist(),
            "sigma_max_se": sig_se[:, b].tolist(),
            "fit_ratio_vs_L": fit_record(r.fits[beta]),
            "expected_slope": r.expected_slope[beta],
        }
        for b, beta in enumerate(r.betas)
    }
    return {
        "references": [
            "Cohen, Cont, Rossier & Xu 2021, 'Scaling properties of deep residual "
            "networks', ICML",
            "Marion, Fermanian, Biau & Vert 2025, 'Scaling ResNets in the large-depth "
            "regime', JMLR 26(56)",
        ],
        "iid": {"settings": r.settings, "panels": depth_panels, "seconds": r.seconds},
        "heatmap": {
            "settings": h.settings,
            "hursts": list(h.hursts),
            "betas": list(h.betas),
            "log10_ratio_mean": heat_m.tolist(),
            "log10_ratio_se": heat_se.tolist(),
            "measured_critical_beta": [
                None if np.isnan(c) else float(c) for c in h.critical_beta
            ],
            "seconds": h.seconds,
        },
    }


def write_outputs(
    depth_result: DepthScalingResult,
    heatmap: HurstHeatmapResult,
    out: str | os.PathLike,
    **extra,
) -> dict[str, Any]:
    """Write `scaling_regimes.json` (every number, mean ± s.e. per cell, and `extra`)
    and `scaling_regimes.png` to the directory `out` (created if needed); returns the
    JSON record."""
    return write_figure_and_record(
        out,
        "scaling_regimes",
        lambda path: plot_scaling_regimes(depth_result, heatmap, path),
        {**_record(depth_result, heatmap), **extra},
    )


def summary(r: DepthScalingResult, h: HurstHeatmapResult) -> str:
    """The tables `run` prints."""
    from .._cli import markdown_table

    ratio_m, ratio_se = _mean_se(np.exp(r.log_ratio))
    sig_m, _ = _mean_se(r.sigma_max)
    rows = []
    for b, beta in enumerate(r.betas):
        fit = r.fits[beta]
        expected = r.expected_slope[beta]
        rows.append(
            [
                beta,
                f"{ratio_m[0, b]:.3g} ± {ratio_se[0, b]:.2g}",
                f"{ratio_m[-1, b]:.3g} ± {ratio_se[-1, b]:.2g}",
                float(sig_m[-1, b]),
                f"{fit.slope:.3f} ± {fit.slope_stderr:.3f}",
                "explodes" if expected is None else f"{expected:g}",
            ]
        )
    first = markdown_table(
        [
            "beta",
            f"ratio at L={r.depths[0]}",
            f"ratio at L={r.depths[-1]}",
            f"sigma_max at L={r.depths[-1]}",
            "slope vs L (geometric mean)",
            "theory",
        ],
        rows,
    )
    second = markdown_table(
        ["H", f"measured critical beta (L={h.depth})", "theory beta = H"],
        [[hh, float(c), hh] for hh, c in zip(h.hursts, h.critical_beta)],
    )
    return first + "\n\n" + second


def run(args: argparse.Namespace) -> int:
    """Run `contdepth scaling-regimes`; returns the exit status."""
    start = time.perf_counter()
    key_depth, key_heat = jr.split(jr.PRNGKey(args.seed))
    r = run_depth_scaling(
        args.depths, args.betas, key=key_depth, num_keys=args.keys, dim=args.dim
    )
    h = run_hurst_heatmap(
        key=key_heat, depth=args.heatmap_depth, num_keys=args.heatmap_keys, dim=args.dim
    )
    record = write_outputs(
        r, h, args.out, seed=args.seed, seconds=time.perf_counter() - start
    )
    print(summary(r, h))
    print(
        f"\nwrote {args.out}/scaling_regimes.png and {args.out}/scaling_regimes.json "
        f"({record['seconds']:.1f} s)"
    )
    return 0
