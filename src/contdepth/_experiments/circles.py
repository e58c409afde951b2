"""Augmented Neural ODEs on concentric circles (Dupont, Doucet & Teh 2019, "Augmented
Neural ODEs", NeurIPS; their Fig. 4/5 setting).

The data: `g(x) = -1` for `||x|| <= r1` and `g(x) = +1` for `r2 <= ||x|| <= r3` in the
plane (`r1, r2, r3 = 0.5, 1, 1.5`), sampled uniformly by area. The flow of an ODE on
`R^2` is a homeomorphism, so it cannot move the disc out of the annulus around it; a
linear readout after a plain Neural ODE can only separate them by squeezing the
annulus through a gap with large Jacobians and many function evaluations. An
augmented Neural ODE ([`contdepth.AugmentedNeuralODE`][]) flows `[x, 0_p]` in
`R^(2+p)`, where the disc can simply be lifted out.

Both models are `readout(flow(x))` with a linear readout to one number, trained on
the mean squared error to `g(x)`, with the same field architecture, optimiser,
batches, steps and dopri5 tolerances. NFE (function evaluations per forward solve) is
`6 * num_steps + 1` for diffrax's first-same-as-last Dopri5, `num_steps` the accepted
plus rejected steps of each sample's solve (checked against a counting field in the
tests).
"""

import argparse
import dataclasses
import os
import time
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .._fields.mlp import MLPField
from .._jacobian.dense import jacobian
from .._models.augmented import AugmentedNeuralODE
from .._models.neural_ode import NeuralODE
from .._optional import require
from .._outputs import write_figure_and_record
from .._train.train import train
from .._validation import (
    check_key,
    check_positive_float,
    check_positive_int,
)


RADII = (0.5, 1.0, 1.5)
PAPER_SETTING = {
    "reference": "Dupont, Doucet & Teh 2019, 'Augmented Neural ODEs', NeurIPS "
    "(arXiv:1904.01681), concentric circles g(x) = -1 for ||x|| <= r1, +1 for "
    "r2 <= ||x|| <= r3",
    "radii": list(RADII),
    "models": "Neural ODE on R^2 vs augmented Neural ODE on R^(2+p), linear readout",
    "claim": "the augmented model trains faster, needs fewer function evaluations and "
    "separates the classes; the plain one squeezes through with large Jacobians",
}


def nfe_per_solve(num_steps) -> Array:
    """Function evaluations of one diffrax `Dopri5` solve with an adaptive controller
    and `dt0=None`: `6 * num_steps + 1` (six new stages per accepted or rejected step,
    first-same-as-last, plus one for the initial step size)."""
    return 6 * jnp.asarray(num_steps) + 1


# ------------------------------------------------------------------------------ data


def concentric_circles(
    n: int,
    key: PRNGKeyArray,
    *,
    radii: tuple[float, float, float] = RADII,
) -> tuple[Float[Array, "n 2"], Float[Array, " n"]]:
    """Dupont et al.'s concentric-circles data in the plane: `n // 2` points uniform
    (by area) in the disc `||x|| <= r1` with `g = -1`, the rest uniform in the
    annulus `r2 <= ||x|| <= r3` with `g = +1`, in random order.

    **Arguments:**

    - `n`: number of points, `>= 2`.
    - `key`: a `jax.random.PRNGKey`.
    - `radii`: `(r1, r2, r3)` with `0 < r1 < r2 < r3`.

    **Returns:**

    `(x, g)`: points `(n, 2)` and targets `(n,)` in `{-1., +1.}`.
    """
    n = check_positive_int("n", n)
    if n < 2:
        raise ValueError(f"`n` must be >= 2 (one point per class at least), got {n}.")
    check_key("key", key)
    r1, r2, r3 = (check_positive_float(f"radii[{i}]", r) for i, r in enumerate(radii))
    if not r1 < r2 < r3:
        raise ValueError(f"`radii` must satisfy 0 < r1 < r2 < r3, got {tuple(radii)}.")
    return _circles(key, n, (r1, r2, r3))


@eqx.filter_jit
def _circles(key, n: int, radii):
    r1, r2, r3 = radii
    k_r, k_a, k_p = jr.split(key, 3)
    inner = jnp.arange(n) < n // 2
    lo = jnp.where(inner, 0.0, r2**2)
    hi = jnp.where(inner, r1**2, r3**2)
    # Uniform by area: r^2 uniform between the squared radii.
    r = jnp.sqrt(lo + (hi - lo) * jr.uniform(k_r, (n,)))
    angle = 2 * jnp.pi * jr.uniform(k_a, (n,))
    x = jnp.stack([r * jnp.cos(angle), r * jnp.sin(angle)], axis=1)
    g = jnp.where(inner, -1.0, 1.0)
    perm = jr.permutation(k_p, n)
    return x[perm], g[perm]


# ----------------------------------------------------------------------------- model


class _Regressor(eqx.Module):
    """`readout(flow(x))` to one number, with the solver's step count."""

    flow: NeuralODE | AugmentedNeuralODE
    readout: eqx.nn.Linear

    def with_steps(self, x):
        sol = self.flow.solve(x)
        assert sol.ys is not None  # the flow saves its final state
        return self.readout(sol.ys[-1])[0], sol.stats["num_steps"]

    def __call__(self, x):
        return self.with_steps(x)[0]

    def flow_jacobian(self, x):
        """The Jacobian of the whole flow (on `R^(2+p)` when augmented) at `x`."""
        if isinstance(self.flow, AugmentedNeuralODE):
            return jacobian(self.flow.ode, self.flow.lift(x))
        return jacobian(self.flow, x)


def _make(augment: int, width: int, horizon: float, rtol: float, atol: float, key):
    k_field, k_out = jr.split(key)
    dim = 2 + augment
    field = MLPField(dim, width, 1, activation=jax.nn.relu, key=k_field)
    ode = NeuralODE(field, horizon, solver=diffrax.Dopri5(), rtol=rtol, atol=atol)
    flow = (
        ode if augment == 0 else AugmentedNeuralODE(ode, augment, keep_augmented=True)
    )
    return _Regressor(flow, eqx.nn.Linear(dim, 1, key=k_out))


def _mse_with_nfe(model, x, g):
    pred, steps = jax.vmap(model.with_steps)(x)
    nfe = nfe_per_solve(steps)
    aux = {"nfe_mean": jnp.mean(nfe), "nfe_max": jnp.max(nfe)}
    return jnp.mean((pred - g) ** 2), aux


@eqx.filter_jit
def _evaluate(model, x, g):
    pred, steps = jax.vmap(model.with_steps)(x)
    nfe = nfe_per_solve(steps)
    acc = jnp.mean(jnp.sign(pred) == g)
    return jnp.mean((pred - g) ** 2), acc, jnp.mean(nfe), jnp.max(nfe)


@eqx.filter_jit
def _sigma_max(model, x):
    sv = jax.vmap(
        lambda xi: jnp.linalg.svd(model.flow_jacobian(xi), compute_uv=False)[0]
    )(x)
    return sv


@eqx.filter_jit
def _grid_values(model, grid):
    return jax.vmap(model)(grid)


# ---------------------------------------------------------------------------- driver


@dataclasses.dataclass(frozen=True)
class CirclesResult:
    """What [`run_circles`][contdepth.experiments.run_circles] returns: per model name
    (`"node"`, `"anode"`) a dict with

    - `loss`, `nfe_mean`, `nfe_max`: per training step, the batch loss and the mean /
        max NFE of the batch's forward solves; `train_nfe_mean` their mean over steps;
    - `train_loss`, `train_accuracy`, `test_loss`, `test_accuracy`;
    - `test_nfe_mean`, `test_nfe_max`: NFE per forward solve on the test points;
    - `sigma_max_mean`, `sigma_max_max`: the flow Jacobian's largest singular value
        (`cd.jacobian`, on `R^(2+p)` for the augmented model) over the test points;
    - `seconds`: training wall time (compilation included);
    - `grid_values`: the model output on `grid` (for the decision regions).

    `grid` is `(g, g, 2)`; `settings` every setting of the run.
    """

    models: dict[str, dict[str, Any]]
    grid: np.ndarray
    test_points: tuple[np.ndarray, np.ndarray]
    settings: dict[str, Any]


def run_circles(
    *,
    key: PRNGKeyArray,
    augment: int = 1,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 1e-2,
    width: int = 32,
    horizon: float = 1.0,
    rtol: float = 1e-3,
    atol: float = 1e-3,
    num_train: int = 512,
    num_test: int = 512,
    num_jacobian: int = 128,
    grid_size: int = 40,
) -> CirclesResult:
    """Train a plain Neural ODE and an augmented one (`augment = p` extra zero
    coordinates) on concentric circles with the same budget, and measure loss curves,
    NFE per solve, the flow Jacobian's `sigma_max` and accuracy (Dupont et al. 2019).

    Both: field `MLPField(2 + p, width, 1, relu)`, `diffrax.Dopri5` with
    `PIDController(rtol, atol)`, horizon `T`, readout `Linear(2 + p, 1)` on the whole
    final state, MSE to `g = +-1`, Adam(`lr`), the same `steps` batches of
    `batch_size` (`cd.train`, one batch key). Accuracy is `sign(output) == g`.

    **Arguments:**

    - `key`: a `jax.random.PRNGKey` (split into data, weights and batch order; the
        two models get the same weight key).
    - `augment`: `p >= 1`.
    - `steps`, `batch_size`, `lr`: the training budget.
    - `width`, `horizon`, `rtol`, `atol`: the field and the solver.
    - `num_train`, `num_test`: data sizes.
    - `num_jacobian`: test points at which `sigma_max` is measured.
    - `grid_size`: the decision-region grid is `grid_size x grid_size` on
        `[-2, 2]^2`.

    **Returns:**

    A [`CirclesResult`][contdepth.experiments.CirclesResult].

    Reference: Dupont, Doucet & Teh 2019, "Augmented Neural ODEs" (NeurIPS).
    """
    check_key("key", key)
    augment = check_positive_int("augment", augment)
    steps = check_positive_int("steps", steps)
    num_train = check_positive_int("num_train", num_train)
    num_test = check_positive_int("num_test", num_test)
    batch_size = check_positive_int("batch_size", batch_size)
    if batch_size > num_train:
        raise ValueError(
            f"`batch_size` ({batch_size}) must be <= `num_train` ({num_train})."
        )
    lr = check_positive_float("lr", lr)
    width = check_positive_int("width", width)
    horizon = check_positive_float("horizon", horizon)
    rtol, atol = check_positive_float("rtol", rtol), check_positive_float("atol", atol)
    num_jacobian = min(check_positive_int("num_jacobian", num_jacobian), num_test)
    grid_size = check_positive_int("grid_size", grid_size)
    dtype = jnp.result_type(float)

    k_train, k_test, k_model, k_batch = jr.split(key, 4)
    x_tr, g_tr = concentric_circles(num_train, k_train)
    x_te, g_te = concentric_circles(num_test, k_test)
    x_tr, g_tr, x_te, g_te = (a.astype(dtype) for a in (x_tr, g_tr, x_te, g_te))
    axis = jnp.linspace(-2.0, 2.0, grid_size, dtype=dtype)
    grid = jnp.stack(jnp.meshgrid(axis, axis, indexing="xy"), axis=-1)

    models = {}
    for name, p in (("node", 0), ("anode", augment)):
        model = _make(p, width, horizon, rtol, atol, k_model)
        model, history = train(
            model,
            (x_tr, g_tr),
            steps=steps,
            batch_size=batch_size,
            key=k_batch,
            loss_fn=_mse_with_nfe,
            optimizer=optax.adam(lr),
            progress=False,
        )
        tr_loss, tr_acc, _, _ = _evaluate(model, x_tr, g_tr)
        te_loss, te_acc, te_nfe, te_nfe_max = _evaluate(model, x_te, g_te)
        sigma = np.asarray(_sigma_max(model, x_te[:num_jacobian]))
        models[name] = {
            "augment": p,
            "loss": np.asarray(history["loss"]),
            "nfe_mean": np.asarray(history["aux"]["nfe_mean"]),
            "nfe_max": np.asarray(history["aux"]["nfe_max"]),
            "train_nfe_mean": float(np.mean(history["aux"]["nfe_mean"])),
            "train_loss": float(tr_loss),
            "train_accuracy": float(tr_acc),
            "test_loss": float(te_loss),
            "test_accuracy": float(te_acc),
            "test_nfe_mean": float(te_nfe),
            "test_nfe_max": float(te_nfe_max),
            "sigma_max_mean": float(sigma.mean()),
            "sigma_max_max": float(sigma.max()),
            "seconds": float(history["seconds"]),
            "grid_values": np.asarray(_grid_values(model, grid.reshape(-1, 2))).reshape(
                grid_size, grid_size
            ),
        }
    settings = dict(
        augment=augment,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        optimiser="adam",
        loss="mean squared error to g = +-1",
        field=f"MLPField(2 + p, {width}, 1, relu)",
        readout="Linear(2 + p, 1)",
        solver="diffrax.Dopri5",
        rtol=rtol,
        atol=atol,
        horizon=horizon,
        num_train=num_train,
        num_test=num_test,
        num_jacobian=num_jacobian,
        radii=list(RADII),
        nfe="6 * num_steps + 1 per sample's solve",
        dtype=str(dtype),
    )
    return CirclesResult(
        models=models,
        grid=np.asarray(grid),
        test_points=(np.asarray(x_te), np.asarray(g_te)),
        settings=settings,
    )


# -------------------------------------------------------------------------- plotting

_LABELS = {"node": "Neural ODE", "anode": "augmented Neural ODE"}


def plot_circles(result: CirclesResult, path: str | os.PathLike | None = None):
    """Loss curves, NFE per forward solve over training, and the two decision regions
    with the test points; saved to `path` when given. Returns the figure."""
    plt = require("matplotlib.pyplot", extra="plot")

    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    colors = {"node": "tab:red", "anode": "tab:blue"}
    for name, m in result.models.items():
        label = _LABELS[name] + (f" (p={m['augment']})" if m["augment"] else "")
        axes[0].plot(m["loss"], color=colors[name], label=label, lw=1)
        axes[1].plot(m["nfe_mean"], color=colors[name], label=label, lw=1)
    axes[0].set(yscale="log", xlabel="step", ylabel="batch MSE", title="loss")
    axes[1].set(xlabel="step", ylabel="mean NFE per forward solve", title="NFE")
    axes[0].legend(fontsize=8)
    x, g = result.test_points
    extent = (
        result.grid[..., 0].min(),
        result.grid[..., 0].max(),
        result.grid[..., 1].min(),
        result.grid[..., 1].max(),
    )
    for ax, (name, m) in zip(axes[2:], result.models.items()):
        ax.imshow(
            np.sign(m["grid_values"]),
            origin="lower",
            extent=extent,
            cmap="coolwarm",
            alpha=0.35,
            vmin=-1,
            vmax=1,
        )
        ax.scatter(x[:, 0], x[:, 1], c=g, cmap="coolwarm", s=4, vmin=-1, vmax=1)
        ax.set(
            title=f"{_LABELS[name]}: test acc {m['test_accuracy']:.3f}", aspect="equal"
        )
    fig.suptitle("Concentric circles (Dupont et al. 2019)")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


# ------------------------------------------------------------------------------- CLI

TABLE_HEADERS = [
    "model",
    "p",
    "test acc",
    "train acc",
    "test loss",
    "NFE mean over training",
    "test NFE mean",
    "test NFE max",
    "sigma_max mean",
    "sigma_max max",
    "seconds",
]
_TABLE_KEYS = [
    "augment",
    "test_accuracy",
    "train_accuracy",
    "test_loss",
    "train_nfe_mean",
    "test_nfe_mean",
    "test_nfe_max",
    "sigma_max_mean",
    "sigma_max_max",
    "seconds",
]


def summary(result: CirclesResult) -> str:
    """The Markdown table `run` prints."""
    from .._cli import markdown_table

    rows = [[name] + [m[k] for k in _TABLE_KEYS] for name, m in result.models.items()]
    return markdown_table(TABLE_HEADERS, rows)


def _record(result: CirclesResult) -> dict[str, Any]:
    models = {
        name: {
            k: (v.tolist() if isinstance(v, np.ndarray) else v)
            for k, v in m.items()
            if k != "grid_values"
        }
        for name, m in result.models.items()
    }
    return {"paper": PAPER_SETTING, "ours": result.settings, "results": models}


def write_outputs(
    result: CirclesResult, out: str | os.PathLike, **extra
) -> dict[str, Any]:
    """Write `circles.json` (every number, the paper's setting next to ours, and
    `extra`) and `circles.png` to the directory `out`; returns the JSON record."""
    return write_figure_and_record(
        out,
        "circles",
        lambda path: plot_circles(result, path),
        {**_record(result), **extra},
    )


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `circles` subcommand to an `argparse` subparsers object."""
    parser = subparsers.add_parser(
        "circles",
        help="plain vs augmented Neural ODE on concentric circles (Dupont et al. 2019)",
        description=(
            "Dupont, Doucet & Teh 2019 (NeurIPS): train a Neural ODE on R^2 and an\n"
            "augmented one on R^(2+p) on concentric circles with the same budget\n"
            "(steps, Adam, dopri5 tolerances), and compare loss curves, NFE per\n"
            "forward solve, sigma_max of the flow Jacobian and test accuracy.\n"
            "Writes circles.json and circles.png to --out."
        ),
    )
    parser.add_argument("--augment", type=int, default=1, help="augmented dimensions p")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    parser.add_argument("--width", type=int, default=32, help="field hidden width")
    parser.add_argument("--tol", type=float, default=1e-3, help="dopri5 rtol = atol")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed")
    parser.add_argument(
        "--out", metavar="DIR", default="contdepth-out/circles", help="output directory"
    )
    parser.add_argument("--x64", action="store_true", help="compute in float64")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run `contdepth circles`; returns the exit status."""
    start = time.perf_counter()
    result = run_circles(
        key=jr.PRNGKey(args.seed),
        augment=args.augment,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        width=args.width,
        rtol=args.tol,
        atol=args.tol,
    )
    seconds = time.perf_counter() - start
    write_outputs(result, args.out, seed=args.seed, seconds=seconds)
    print(summary(result))
    print(
        f"\nwrote {args.out}/circles.png and {args.out}/circles.json ({seconds:.1f} s)"
    )
    return 0
