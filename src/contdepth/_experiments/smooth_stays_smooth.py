"""Smooth stays smooth: a residual network initialised as the discretisation of a
Neural ODE stays one during training (Marion, Wu, Sander & Biau 2024, "Implicit
regularization of deep residual networks towards neural ODEs", ICLR; their Fig. 1
setting).

The network is `x_{k+1} = x_k + V_k tanh(W_k x_k) / L`, `k = 0, ..., L-1`, with
`x_k in R^16` and `W_k in R^{32 x 16}`, `V_k in R^{16 x 32}`: the network of
[`contdepth.untied_resnet`][] with `beta = 1`, trained as stacked arrays by a batched
kernel (one `lax.scan` over layers) for speed. It is trained by full-batch gradient
descent with learning rate `lr * L`: a layer's gradient is `O(1/L)`, so this step moves
every layer by `O(lr)` whatever the depth, and `steps * lr` is the training time of the
depth-independent gradient flow of Marion et al.

The data are a synthetic regression task (our choice, stated in the result): inputs
`x ~ N(0, I_16)`, `n = 128` of them, and targets from a fixed random teacher
`y = x + B tanh(A x)` with `A ~ N(0, 1/16)`, `B ~ N(0, 1/32)` entrywise, drawn from the
run's key.

After training, the weights' regularity in depth is `max_k ||Z_{k+1} - Z_k||_F`, `Z_k`
the concatenated `(W_k, V_k)` ([`contdepth.depth_regularity`][]'s `max_increment`).
Claim: from the smooth initialisation (`V_k = 0`, one `W` for every layer) it falls like
`1/L` (log-log slope `-1`); from an i.i.d. initialisation it does not fall (slope
`~ 0`).
"""

import argparse
import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._argtypes import int_list
from .._depth.regularity import depth_regularity, scaling_exponent, ScalingFit
from .._optional import require
from .._outputs import write_figure_and_record
from .._validation import check_key, check_positive_float, check_positive_int


INITS = ("smooth", "iid")
DEPTHS = (2, 4, 8, 16, 32, 64, 128, 256)
DIM, HIDDEN, NUM_SAMPLES = 16, 32, 128

PAPER_SETTING = {
    "reference": "Marion, Wu, Sander & Biau 2024, 'Implicit regularization of deep "
    "residual networks towards neural ODEs', ICLR (arXiv:2309.01213), Fig. 1",
    "model": "x_{k+1} = x_k + V_k sigma(W_k x_k) / L",
    "dim": DIM,
    "hidden": HIDDEN,
    "learning_rate": "proportional to L",
    "smooth_init": "V_k = 0, W_k = W shared by every layer",
    "claim": "max_k ||Z_{k+1} - Z_k||_F = O(1/L) after training from the smooth "
    "initialisation; O(1) from an i.i.d. one",
    "source_note": "dim, hidden and lr ~ L as stated in issue 16; the paper's data "
    "set, activation, sample size and step count could not be read from the stored "
    "corpus, so ours are chosen and stated in `ours`.",
}


# ---------------------------------------------------------------------------- kernel


def _forward(W, V, x, scale):
    """The whole batch `x` `(n, d)` through the stack, layer `k` scaled by `scale[k]`
    (`1/L`, or `0` for a padding layer): batched matrix products inside one `lax.scan`
    over layers, which compiles several times faster on CPU than a vmapped per-sample
    scan."""

    def layer(h, wvs):
        Wk, Vk, sk = wvs
        return h + sk * jnp.tanh(h @ Wk.T) @ Vk.T, None

    h, _ = jax.lax.scan(layer, x, (W, V, scale))
    return h


def _loss(params, x, y, scale):
    W, V = params
    out = _forward(W, V, x, scale)
    return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=-1))


def _train(params, x, y, scale, lr, steps):
    def step(p, _):
        value, grads = jax.value_and_grad(_loss)(p, x, y, scale)
        return jax.tree.map(lambda a, g: a - lr * g, p, grads), value

    params, losses = jax.lax.scan(step, params, None, length=steps)
    return params, losses[0], _loss(params, x, y, scale)


def teacher_data(
    key: PRNGKeyArray,
    num_samples: int = NUM_SAMPLES,
    dim: int = DIM,
    hidden: int = HIDDEN,
) -> tuple[Float[Array, "n dim"], Float[Array, "n dim"]]:
    """The synthetic regression task: `x ~ N(0, I_dim)` and `y = x + B tanh(A x)` for a
    random teacher `A ~ N(0, 1/dim)`, `B ~ N(0, 1/hidden)` (entrywise).

    **Arguments:**

    - `key`: a `jax.random.PRNGKey` for the inputs and the teacher.
    - `num_samples`, `dim`, `hidden`: `n`, the state size and the teacher's width.

    **Returns:**

    `(x, y)`, both of shape `(num_samples, dim)`.
    """
    kx, ka, kb = jr.split(key, 3)
    x = jr.normal(kx, (num_samples, dim))
    A = jr.normal(ka, (hidden, dim)) / np.sqrt(dim)
    B = jr.normal(kb, (dim, hidden)) / np.sqrt(hidden)
    return x, x + jnp.tanh(x @ A.T) @ B.T


def initial_weights(
    key: PRNGKeyArray, init: str, depth: int, dim: int = DIM, hidden: int = HIDDEN
) -> tuple[Float[Array, "depth hidden dim"], Float[Array, "depth dim hidden"]]:
    """Stacked initial weights `(W, V)`, `(depth, hidden, dim)` and
    `(depth, dim, hidden)`, with the law of `contdepth.untied_resnet(key, dim=dim,
    hidden=hidden, num_layers=depth, init=init)`'s (`init` `"smooth"`: `V_k = 0` and
    one `W ~ N(0, 1/dim)` for every layer; `"iid"`: `W_k ~ N(0, 1/dim)`,
    `V_k ~ N(0, 1/hidden)` entrywise, independent layers), drawn as arrays: no
    `depth` modules are built, and it works under `jit`/`vmap` over keys.

    [`run_smooth_stays_smooth`][contdepth.experiments.run_smooth_stays_smooth] gives
    its depth-`L` i.i.d. network the first `L` layers of one draw of `max(depths)`
    layers (one random-number program, slow to compile, for all depths).
    """
    if init not in INITS:
        raise ValueError(f"`init` must be one of {INITS}, got {init!r}.")
    kw, kv = jr.split(key)
    if init == "iid":
        W = jr.normal(kw, (depth, hidden, dim)) / np.sqrt(dim)
        V = jr.normal(kv, (depth, dim, hidden)) / np.sqrt(hidden)
        return W, V
    W = jr.normal(kw, (hidden, dim)) / np.sqrt(dim)
    return jnp.broadcast_to(W, (depth, hidden, dim)), jnp.zeros((depth, dim, hidden))


@eqx.filter_jit
def _draw(seed_keys, *, max_depth, num_samples, dim, hidden):
    """Data and initial weights of every seed, in one program."""

    def one(key):
        k_data, k_init = jr.split(key)
        data = teacher_data(k_data, num_samples, dim, hidden)
        weights = {i: initial_weights(k_init, i, max_depth, dim, hidden) for i in INITS}
        return data, weights

    return jax.vmap(one)(seed_keys)


def _max_increment(W, V, depth):
    rows = jnp.concatenate([W.reshape(W.shape[0], -1), V.reshape(V.shape[0], -1)], 1)
    # The first `depth` layers are the network; the rest is padding.
    return jnp.max(depth_regularity(rows[:depth]).increments)


@eqx.filter_jit
def _train_group(draws, *, depths, lr, steps):
    """Train every `(init, depth, seed)` of `depths` in one program, the networks
    padded to `max(depths)` layers with zero-scaled (identity) layers, which get zero
    gradients. Returns `(max_increment, initial max_increment, initial loss, final
    loss)`, each of shape `(len(INITS), len(depths), num_seeds)`."""
    (x, y), weights = draws
    pad = max(depths)
    W0, V0, scales, lrs = [], [], [], []
    for init in INITS:
        W, V = weights[init]
        for L in depths:
            keep = (jnp.arange(pad) < L)[None, :, None, None]
            W0.append(jnp.where(keep, W[:, :pad], 0.0))
            V0.append(jnp.where(keep, V[:, :pad], 0.0))
            scales.append(
                jnp.broadcast_to(
                    jnp.where(jnp.arange(pad) < L, 1.0 / L, 0.0), (W.shape[0], pad)
                )
            )
            lrs.append(jnp.full((W.shape[0],), lr * L))
    W0, V0, scales, lrs = (jnp.concatenate(a) for a in (W0, V0, scales, lrs))
    runs = len(INITS) * len(depths)
    xs, ys = (jnp.concatenate([a] * runs) for a in (x, y))
    (W, V), loss0, loss = jax.vmap(lambda *a: _train(*a, steps=steps))(
        (W0, V0), xs, ys, scales, lrs
    )
    num_seeds = x.shape[0]
    shape = (len(INITS), len(depths), num_seeds)

    def increments(W, V):
        # The depth of each run is static per block of `num_seeds` runs.
        out = [
            jax.vmap(lambda w, v, L=L: _max_increment(w, v, L))(
                W[r * num_seeds : (r + 1) * num_seeds],
                V[r * num_seeds : (r + 1) * num_seeds],
            )
            for r, L in enumerate(depths * len(INITS))
        ]
        return jnp.concatenate(out)

    parts = (increments(W, V), increments(W0, V0), loss0, loss)
    return tuple(v.reshape(shape) for v in parts)


# ---------------------------------------------------------------------------- driver


@dataclasses.dataclass(frozen=True)
class SmoothStaysSmoothResult:
    """What [`run_smooth_stays_smooth`][contdepth.experiments.run_smooth_stays_smooth]
    returns; arrays are indexed `[init, depth, seed]` with
    `inits = ("smooth", "iid")`.

    - `depths`: the depths `L`.
    - `max_increment`: `max_k ||Z_{k+1} - Z_k||_F` after training.
    - `initial_max_increment`: the same at initialisation.
    - `initial_loss`, `final_loss`: the training loss before and after training.
    - `fits`: per init, the [`contdepth.ScalingFit`][] of the geometric mean over
        seeds of `max_increment` against `L`.
    - `seed_slopes`: per init, the fitted slope of each seed alone, `(num_seeds,)`.
    - `settings`: every setting of the run; `seconds`: wall time of the run.
    """

    depths: tuple[int, ...]
    inits: tuple[str, ...]
    max_increment: np.ndarray
    initial_max_increment: np.ndarray
    initial_loss: np.ndarray
    final_loss: np.ndarray
    fits: dict[str, ScalingFit]
    seed_slopes: dict[str, np.ndarray]
    settings: dict[str, Any]
    seconds: float


def run_smooth_stays_smooth(
    depths: Sequence[int] = DEPTHS,
    *,
    key: PRNGKeyArray,
    num_seeds: int = 3,
    steps: int = 100,
    lr: float = 0.1,
    num_samples: int = NUM_SAMPLES,
    dim: int = DIM,
    hidden: int = HIDDEN,
    one_program: bool | Literal["auto"] = "auto",
) -> SmoothStaysSmoothResult:
    """Train the smooth- and the i.i.d.-initialised network at every depth and measure
    the regularity in depth of the trained weights (Marion et al. 2024).

    For each seed `s` (keys `jax.random.split(key, num_seeds)`), one key draws the data
    (`teacher_data`) and one the initial weights (`initial_weights`; the i.i.d.
    network of depth `L` takes the first `L` layers of one draw of `max(depths)`
    layers). Every `(init, seed)` of a depth trains in one compiled program (`vmap`),
    the steps in a `lax.scan`.

    **Arguments:**

    - `depths`: at least 3 distinct depths `L >= 2`.
    - `key`: a `jax.random.PRNGKey`.
    - `num_seeds`: independent repetitions (data and weights).
    - `steps`: full-batch gradient-descent steps.
    - `lr`: the depth-free learning rate; the step size is `lr * L`.
    - `num_samples`, `dim`, `hidden`: data size, state size and hidden width.
    - `one_program`: train all depths in a single program, shallow networks padded
        with identity layers to `max(depths)`: one compilation instead of one per
        depth, at the price of computing `max(depths)` layers for every depth; the
        results are the same. `"auto"`: when that at most doubles the layers computed
        (`len(depths) * max(depths) <= 2 * sum(depths)`).

    **Returns:**

    A [`SmoothStaysSmoothResult`][contdepth.experiments.SmoothStaysSmoothResult].

    Reference: Marion, Wu, Sander & Biau 2024, "Implicit regularization of deep
    residual networks towards neural ODEs" (ICLR).
    """
    check_key("key", key)
    depths = tuple(check_positive_int("depths[i]", L) for L in depths)
    if len(depths) < 3 or min(depths) < 2 or len(set(depths)) != len(depths):
        raise ValueError(
            f"`depths` must hold at least 3 distinct depths >= 2 (a slope with a "
            f"standard error, and at least one increment per network), got {depths}."
        )
    num_seeds = check_positive_int("num_seeds", num_seeds)
    steps = check_positive_int("steps", steps)
    lr = check_positive_float("lr", lr)
    num_samples = check_positive_int("num_samples", num_samples)
    dim = check_positive_int("dim", dim)
    hidden = check_positive_int("hidden", hidden)

    start = time.perf_counter()
    draws = _draw(
        jr.split(key, num_seeds),
        max_depth=max(depths),
        num_samples=num_samples,
        dim=dim,
        hidden=hidden,
    )
    if one_program == "auto":
        one_program = len(depths) * max(depths) <= 2 * sum(depths)
    elif not isinstance(one_program, bool):
        raise TypeError(
            f"`one_program` must be True, False or 'auto', got {one_program!r}."
        )
    groups = [depths] if one_program else [(L,) for L in depths]
    parts = [_train_group(draws, depths=g, lr=lr, steps=steps) for g in groups]
    inc, inc0, loss0, loss = (
        np.concatenate([np.asarray(p[i]) for p in parts], axis=1) for i in range(4)
    )
    seconds = time.perf_counter() - start

    fits, seed_slopes = {}, {}
    for i, init in enumerate(INITS):
        fits[init] = scaling_exponent(depths, np.exp(np.mean(np.log(inc[i]), axis=1)))
        seed_slopes[init] = np.array(
            [scaling_exponent(depths, inc[i, :, s]).slope for s in range(num_seeds)]
        )
    settings = dict(
        depths=list(depths),
        num_seeds=num_seeds,
        steps=steps,
        lr=lr,
        step_size="lr * L",
        training_time=steps * lr,
        num_samples=num_samples,
        dim=dim,
        hidden=hidden,
        activation="tanh",
        optimiser="full-batch GD",
        loss="0.5 * mean_i ||x_L(x_i) - y_i||^2",
        data="x ~ N(0, I_dim); y = x + B tanh(A x), A ~ N(0, 1/dim), "
        "B ~ N(0, 1/hidden) entrywise",
        inits={
            "smooth": "V_k = 0, W_k = W ~ N(0, 1/dim) for every k",
            "iid": "W_k ~ N(0, 1/dim), V_k ~ N(0, 1/hidden) independently per k",
        },
        dtype=str(jnp.result_type(float)),
    )
    return SmoothStaysSmoothResult(
        depths=depths,
        inits=INITS,
        max_increment=inc,
        initial_max_increment=inc0,
        initial_loss=loss0,
        final_loss=loss,
        fits=fits,
        seed_slopes=seed_slopes,
        settings={**settings, "one_program": one_program},
        seconds=seconds,
    )


# -------------------------------------------------------------------------- plotting


def plot_smooth_stays_smooth(
    result: SmoothStaysSmoothResult, path: str | os.PathLike | None = None
):
    """Save the log-log plot of `max_k ||Z_{k+1} - Z_k||_F` against `L` for both
    initialisations (every seed as a dot, the geometric mean joined) with the fitted
    lines; saved to `path` when given. Returns the figure."""
    plt = require("matplotlib.pyplot", extra="plot")

    depths = np.asarray(result.depths, dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for i, (init, color) in enumerate(zip(result.inits, ("tab:blue", "tab:red"))):
        inc = result.max_increment[i]
        for s in range(inc.shape[1]):
            ax.plot(depths, inc[:, s], "o", color=color, alpha=0.35, ms=4)
        fit = result.fits[init]
        ax.plot(
            depths,
            np.exp(fit.intercept) * depths**fit.slope,
            "-",
            color=color,
            label=f"{init} init: slope {fit.slope:.3f} ± {fit.slope_stderr:.3f}",
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="depth L",
        ylabel="max_k ||Z_{k+1} - Z_k||_F after training",
        title="Smooth stays smooth (Marion et al. 2024)",
    )
    ax.legend(fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


# ------------------------------------------------------------------------------- CLI


def fit_record(fit: ScalingFit) -> dict[str, float]:
    """A [`contdepth.ScalingFit`][] as a JSON-ready dict."""
    return {
        "slope": float(fit.slope),
        "slope_stderr": float(fit.slope_stderr),
        "intercept": float(fit.intercept),
        "r_squared": float(fit.r_squared),
    }


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `smooth-stays-smooth` subcommand to an `argparse` subparsers object."""
    parser = subparsers.add_parser(
        "smooth-stays-smooth",
        help="train smooth- and iid-initialised ResNets over depth L and measure "
        "max_k ||Z_{k+1} - Z_k|| (Marion et al. 2024)",
        description=(
            "Marion, Wu, Sander & Biau 2024 (ICLR), Fig. 1 setting: train\n"
            "x_{k+1} = x_k + V_k tanh(W_k x_k) / L (d=16, hidden 32) by full-batch GD\n"
            "with step lr * L on a random-teacher regression task, from the smooth\n"
            "initialisation (V=0, tied W) and an i.i.d. one, and fit the log-log\n"
            "slope of the trained weights' max increment against L (claim: -1 vs ~0).\n"
            "Writes smooth_stays_smooth.json and smooth_stays_smooth.png to --out."
        ),
    )
    parser.add_argument(
        "--depths",
        type=int_list,
        default=list(DEPTHS),
        help="depths L, comma-separated",
    )
    parser.add_argument("--seeds", type=int, default=3, help="independent repetitions")
    parser.add_argument("--steps", type=int, default=100, help="gradient-descent steps")
    parser.add_argument(
        "--lr",
        type=float,
        default=0.1,
        help="depth-free learning rate (step size lr * L)",
    )
    parser.add_argument(
        "--samples", type=int, default=NUM_SAMPLES, help="training samples"
    )
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed")
    parser.add_argument(
        "--out", metavar="DIR", default="contdepth-out/smooth", help="output directory"
    )
    parser.set_defaults(func=run)
    return parser


def _record(result: SmoothStaysSmoothResult) -> dict[str, Any]:
    per_depth = {
        init: [
            {
                "depth": L,
                "max_increment": result.max_increment[i, j].tolist(),
                "initial_max_increment": result.initial_max_increment[i, j].tolist(),
                "initial_loss": result.initial_loss[i, j].tolist(),
                "final_loss": result.final_loss[i, j].tolist(),
            }
            for j, L in enumerate(result.depths)
        ]
        for i, init in enumerate(result.inits)
    }
    fits = {
        init: {**fit_record(fit), "seed_slopes": result.seed_slopes[init].tolist()}
        for init, fit in result.fits.items()
    }
    return {
        "paper": PAPER_SETTING,
        "ours": result.settings,
        "results": per_depth,
        "fits": fits,
        "seconds_run": result.seconds,
    }


def write_outputs(
    result: SmoothStaysSmoothResult, out: str | os.PathLike, **extra
) -> dict[str, Any]:
    """Write `smooth_stays_smooth.json` (every number of `result`, the paper's setting
    next to ours, and `extra`) and `smooth_stays_smooth.png` to the directory `out`
    (created if needed); returns the JSON record."""
    return write_figure_and_record(
        out,
        "smooth_stays_smooth",
        lambda path: plot_smooth_stays_smooth(result, path),
        {**_record(result), **extra},
    )


def summary(result: SmoothStaysSmoothResult) -> str:
    """The table `run` prints: per depth the geometric mean over seeds of the max
    increment and the mean final loss, per init the fitted slopes."""
    from .._cli import markdown_table

    gm = np.exp(np.mean(np.log(result.max_increment), axis=2))
    rows = [
        [
            L,
            float(gm[0, j]),
            float(gm[1, j]),
            float(result.final_loss[0, j].mean()),
            float(result.final_loss[1, j].mean()),
        ]
        for j, L in enumerate(result.depths)
    ]
    lines = [
        markdown_table(
            ["L", "max incr. smooth", "max incr. iid", "loss smooth", "loss iid"], rows
        )
    ]
    for init, fit in result.fits.items():
        lines.append(
            f"{init}: slope {fit.slope:.3f} ± {fit.slope_stderr:.3f} "
            f"(R^2 {fit.r_squared:.3f}; per seed "
            f"{', '.join(f'{s:.3f}' for s in result.seed_slopes[init])})"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run `contdepth smooth-stays-smooth`; returns the exit status."""
    start = time.perf_counter()
    result = run_smooth_stays_smooth(
        args.depths,
        key=jr.PRNGKey(args.seed),
        num_seeds=args.seeds,
        steps=args.steps,
        lr=args.lr,
        num_samples=args.samples,
    )
    record = write_outputs(
        result, args.out, seed=args.seed, seconds=time.perf_counter() - start
    )
    print(summary(result))
    print(
        f"\nwrote {args.out}/smooth_stays_smooth.png and "
        f"{args.out}/smooth_stays_smooth.json ({record['seconds']:.1f} s)"
    )
    return 0
