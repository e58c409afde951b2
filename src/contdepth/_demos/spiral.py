"""Fit the dynamics of a cubic spiral from its trajectory: torchdiffeq's
`examples/ode_demo.py` (https://github.com/rtqichen/torchdiffeq), the canonical
demonstration of Chen et al. 2018, "Neural Ordinary Differential Equations", ported to
contdepth.

The true system is `dy/dt = (y**3) @ A` with `A = [[-0.1, 2], [-2, -0.1]]`,
`y(0) = [2, 0]`, observed at 1000 times in `[0, 25]`. The learned field is the demo's
`Linear(2, 50) - tanh - Linear(50, 2)` applied to `y**3`. Training draws, without
replacement, batches of 20 of the 990 ten-point segments of the observed trajectory,
solves the model from each segment's first point and compares it with the segment;
the score is the mean squared error of the whole trajectory solved from `y(0)`.
"""

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Args, RealScalarLike
from .._fields.mlp import MLPField
from .._models.neural_ode import NeuralODE
from .._optional import require
from .._train.data import batch_indices
from .._train.train import train
from .._train.validation import EarlyStopping
from .._validation import (
    check_bool,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
)


TRUE_A = ((-0.1, 2.0), (-2.0, -0.1))
Y0 = (2.0, 0.0)
HORIZON = 25.0
NUM_TIMES = 1000
BATCH_TIME = 10
BATCH_SIZE = 20
LOSSES = ("mse", "l1")


# ------------------------------------------------------------------------------ data


def _true_field(t, y, args):
    return (y**3) @ jnp.asarray(TRUE_A, y.dtype)


def spiral_data(
    dtype=jnp.float32, num_times: int = NUM_TIMES, horizon: float = HORIZON
) -> tuple[Float[Array, " times"], Float[Array, "times 2"]]:
    """The observed trajectory of `dy/dt = (y**3) @ A` from `y(0) = [2, 0]`.

    Solved in float64 with `diffrax.Dopri5` at `rtol=1e-10, atol=1e-12` (tighter than
    torchdiffeq's own `1e-7, 1e-9`), then cast.

    **Arguments:**

    - `dtype`: the dtype of the returned arrays.
    - `num_times`: number of equally spaced observation times.
    - `horizon`: the last observation time.

    **Returns:**

    `(ts, ys)`: times `(num_times,)` from `0` to `horizon`, states `(num_times, 2)`.
    """
    num_times = check_positive_int("num_times", num_times)
    horizon = check_positive_float("horizon", horizon)
    with jax.enable_x64(True):
        ts = jnp.linspace(0.0, horizon, num_times, dtype=jnp.float64)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(_true_field),
            diffrax.Dopri5(),
            t0=0.0,
            t1=horizon,
            dt0=None,
            y0=jnp.asarray(Y0, jnp.float64),
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12),
            max_steps=1_000_000,
        )
        ts_np, ys_np = np.asarray(ts), np.asarray(sol.ys)
    return jnp.asarray(ts_np, dtype), jnp.asarray(ys_np, dtype)


def segments(
    ys: Float[Array, "times 2"], batch_time: int = BATCH_TIME
) -> tuple[Float[Array, "n 2"], Float[Array, "n batch_time 2"]]:
    """Every `batch_time`-point window of the trajectory: `n = times - batch_time`
    starts (torchdiffeq's `get_batch` range), as `(first points, windows)`."""
    n = ys.shape[0] - batch_time
    if n < 1:
        raise ValueError(
            f"`batch_time` ({batch_time}) must be smaller than the number of "
            f"observations ({ys.shape[0]})."
        )
    index = jnp.arange(n)[:, None] + jnp.arange(batch_time)[None, :]
    return ys[:n], ys[index]


# ----------------------------------------------------------------------------- field


class CubicField(eqx.Module):
    """torchdiffeq's `ODEFunc`: `F(t, y) = W_2 tanh(W_1 y**3 + b_1) + b_2`, a
    [`contdepth.MLPField`][] (one hidden layer, tanh) on the cubic features `y**3`.

    Initialised as in the demo: weights normal with standard deviation `0.1`, biases
    zero.
    """

    mlp: MLPField

    def __init__(self, dim: int = 2, width: int = 50, *, key: PRNGKeyArray):
        """**Arguments:**

        - `dim`: size of the state.
        - `width`: size of the hidden layer.
        - `key`: a `jax.random.PRNGKey` for the initial weights.
        """
        k_mlp, k1, k2 = jr.split(key, 3)
        mlp = MLPField(dim, width, 1, activation=jax.nn.tanh, key=k_mlp)
        first, last = mlp.mlp.layers
        assert first.bias is not None and last.bias is not None  # MLPs have biases
        self.mlp = eqx.tree_at(
            lambda m: (
                m.mlp.layers[0].weight,
                m.mlp.layers[0].bias,
                m.mlp.layers[1].weight,
                m.mlp.layers[1].bias,
            ),
            mlp,
            (
                0.1 * jr.normal(k1, first.weight.shape),
                jnp.zeros_like(first.bias),
                0.1 * jr.normal(k2, last.weight.shape),
                jnp.zeros_like(last.bias),
            ),
        )

    def __call__(self, t: RealScalarLike, y: Float[Array, " dim"], args: Args = None):
        return self.mlp(t, y**3, args)

    def weights(self) -> dict[str, np.ndarray]:
        """`{"w1", "b1", "w2", "b2"}` as NumPy arrays, weights `(out, in)` (PyTorch's
        `nn.Linear` layout too)."""
        first, last = self.mlp.mlp.layers
        arrays = dict(w1=first.weight, b1=first.bias, w2=last.weight, b2=last.bias)
        return {k: np.asarray(v) for k, v in arrays.items()}


# -------------------------------------------------------------------------- training


def _times(ts: np.ndarray, n: int) -> Float[Array, " n"]:
    return jnp.asarray(ts[:n])


def _predict(model: NeuralODE, ts: np.ndarray, y0, n: int):
    """The model's `(batch, n, 2)` trajectories from each `y0`, over `ts[:n]`; the
    horizon follows the (static) length `n`, so one function serves the training
    segments and the full trajectory."""
    horizon = float(ts[n - 1])
    if horizon != model.horizon:
        model = model.replace(horizon=horizon, max_steps=16 * n + 4096)
    times = _times(ts, n)
    return jax.vmap(lambda y: model.trajectory(y, times))(y0)


def make_loss(ts: np.ndarray, kind: str = "mse") -> Callable:
    """`loss_fn(model, y0s, windows)` for [`contdepth.train`][]: the mean squared
    (`"mse"`) or absolute (`"l1"`, torchdiffeq's choice) error between the model's
    trajectories from `y0s` `(batch, 2)` and the observed `windows`
    `(batch, n, 2)`, at the times `ts[:n]`."""
    if kind not in LOSSES:
        raise ValueError(f"`loss` must be one of {LOSSES}, got {kind!r}.")
    ts = np.asarray(ts)

    def loss_fn(model, y0s, windows):
        diff = _predict(model, ts, y0s, windows.shape[1]) - windows
        return jnp.mean(diff**2) if kind == "mse" else jnp.mean(jnp.abs(diff))

    return loss_fn


def make_metrics(ts: np.ndarray) -> dict[str, Callable]:
    """Validation metrics `"mse"` and `"mae"` over whole trajectories."""
    ts = np.asarray(ts)

    def mse(model, y0s, ys):
        return jnp.mean((_predict(model, ts, y0s, ys.shape[1]) - ys) ** 2)

    def mae(model, y0s, ys):
        return jnp.mean(jnp.abs(_predict(model, ts, y0s, ys.shape[1]) - ys))

    return {"mse": mse, "mae": mae}


def make_optimizer(
    iterations: int,
    learning_rate: float,
    final_learning_rate: float,
    weight_decay: float = 0.0,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW (decoupled `weight_decay`, scaled by the learning rate as in optax and
    `torch.optim.AdamW`) with a cosine decay from `learning_rate` to
    `final_learning_rate` over `iterations` steps; returns `(optimizer, schedule)`."""
    if final_learning_rate > learning_rate:
        raise ValueError(
            f"`final_learning_rate` ({final_learning_rate}) must not exceed "
            f"`learning_rate` ({learning_rate})."
        )
    schedule = optax.cosine_decay_schedule(
        learning_rate, iterations, alpha=final_learning_rate / learning_rate
    )
    return optax.adamw(schedule, weight_decay=weight_decay), schedule


@dataclasses.dataclass(frozen=True)
class SpiralResult:
    """What [`fit_spiral`][] returns.

    - `model`: the trained `NeuralODE` (horizon `ts[batch_time - 1]`, the segments');
        `model.replace(horizon=25.0)` solves the whole trajectory.
    - `ts`, `true_ys`, `pred_ys`: `(1000,)` times, `(1000, 2)` observed and predicted
        (from `y(0)`) states, as NumPy arrays.
    - `mse`, `mae`: mean squared / absolute error of `pred_ys`.
    - `last_mse`: the full-trajectory MSE of the last iterate (equal to `mse` unless
        `keep_best` returned an earlier one, from step `history["best_step"]`).
    - `seconds`: wall time of training and the final evaluation, compilation included;
        `compile_seconds`: of which the first training step (its compilation).
    - `history`: `cd.train`'s history (without the optimiser state).
    - `settings`: the hyper-parameters used.
    """

    model: NeuralODE
    ts: np.ndarray
    true_ys: np.ndarray
    pred_ys: np.ndarray
    mse: float
    mae: float
    last_mse: float
    seconds: float
    compile_seconds: float
    history: dict[str, Any]
    settings: dict[str, Any]


def _settings(**kwargs) -> dict[str, Any]:
    kw = dict(kwargs)
    kw["iterations"] = check_positive_int("iterations", kw["iterations"])
    kw["seed"] = check_nonnegative_int("seed", kw["seed"])
    for name in ("learning_rate", "final_learning_rate", "rtol", "atol"):
        kw[name] = check_positive_float(name, kw[name])
    kw["weight_decay"] = check_nonnegative_float("weight_decay", kw["weight_decay"])
    kw["keep_best"] = check_bool("keep_best", kw["keep_best"])
    kw["eval_every"] = check_positive_int(
        "eval_every", kw["eval_every"] or max(1, kw["iterations"] // 20)
    )
    if kw["loss"] not in LOSSES:
        raise ValueError(f"`loss` must be one of {LOSSES}, got {kw['loss']!r}.")
    if kw["solver"] not in SOLVERS:
        raise ValueError(
            f"`solver` must be one of {sorted(SOLVERS)}, got {kw['solver']!r}."
        )
    kw.update(
        batch_size=BATCH_SIZE,
        batch_time=BATCH_TIME,
        num_times=NUM_TIMES,
        horizon=HORIZON,
        width=50,
        optimizer="adamw + cosine decay",
        dtype="float32",
    )
    return kw


def check_nonnegative_int(name: str, value) -> int:
    """`value` must be a Python/NumPy int (not a bool) >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int >= 0, got {value!r}.")
    if value < 0:
        raise ValueError(f"`{name}` must be an int >= 0, got {value}.")
    return int(value)


SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5}


def build_model(
    settings: dict[str, Any], ts: np.ndarray, key: PRNGKeyArray
) -> NeuralODE:
    """The demo's field in a `NeuralODE` over one training segment."""
    s = settings
    return NeuralODE(
        CubicField(key=key),
        float(ts[s["batch_time"] - 1]),
        solver=SOLVERS[s["solver"]](),
        rtol=s["rtol"],
        atol=s["atol"],
    )


def fit_spiral(
    *,
    iterations: int = 2000,
    seed: int = 0,
    learning_rate: float = 3e-2,
    final_learning_rate: float = 1e-5,
    weight_decay: float = 1e-2,
    loss: str = "mse",
    solver: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-7,
    eval_every: int | None = 50,
    keep_best: bool = True,
    progress: bool = True,
) -> SpiralResult:
    """Learn the spiral's dynamics from its trajectory (the torchdiffeq demo).

    **Arguments:**

    - `iterations`: optimiser steps (batches of 20 ten-point segments).
    - `seed`: seeds the initial weights and the batch order.
    - `learning_rate`, `final_learning_rate`: AdamW's cosine-decay schedule.
    - `weight_decay`: AdamW's decoupled weight decay (keeps the field smooth between
        the arms of the spiral, where no data constrains it).
    - `loss`: `"mse"` (default) or `"l1"` (torchdiffeq's) on the segments.
    - `solver`: `"dopri5"` (torchdiffeq's default, the default) or `"tsit5"`; `rtol`,
        `atol`: its tolerances.
    - `eval_every`: steps between full-trajectory evaluations (`history
        ["validation"]`); `None` means `iterations // 20`.
    - `keep_best`: return the evaluated model with the lowest full-trajectory MSE
        (`cd.EarlyStopping(monitor="mse")`, never stopping early) rather than the
        last iterate. The trajectory it is scored on is the observed (training) data,
        as in the torchdiffeq demo: there is no held-out set here.
    - `progress`: show a progress bar.

    **Returns:**

    A [`SpiralResult`][].
    """
    s = _settings(
        iterations=iterations,
        seed=seed,
        learning_rate=learning_rate,
        final_learning_rate=final_learning_rate,
        weight_decay=weight_decay,
        loss=loss,
        solver=solver,
        rtol=rtol,
        atol=atol,
        eval_every=eval_every,
        keep_best=keep_best,
    )
    progress = check_bool("progress", progress)
    ts, ys = spiral_data()
    ts_np, true = np.asarray(ts), np.asarray(ys)
    k_model, k_batch = jr.split(jr.PRNGKey(s["seed"]))
    model = build_model(s, ts_np, k_model)
    optimizer, _ = make_optimizer(
        s["iterations"], s["learning_rate"], s["final_learning_rate"], s["weight_decay"]
    )
    kwargs = dict(
        batch_size=s["batch_size"],
        key=k_batch,
        loss_fn=make_loss(ts_np, s["loss"]),
        optimizer=optimizer,
        validation_data=(ys[None, 0], ys[None]),
        metrics=make_metrics(ts_np),
    )
    data = segments(ys, s["batch_time"])
    start = time.perf_counter()
    # Warm-up: one step and one evaluation compile everything the run uses (the
    # compiled step is cached by structure, so the real run below compiles nothing).
    warm, _ = train(model, data, steps=1, eval_every=1, progress=False, **kwargs)
    _full_prediction(warm, ts_np, ys)
    compile_seconds = time.perf_counter() - start
    early = EarlyStopping(monitor="mse") if s["keep_best"] else None
    model, history = train(
        model,
        data,
        steps=s["iterations"],
        early_stopping=early,
        eval_every=s["eval_every"],
        progress=progress,
        **kwargs,
    )
    pred = _full_prediction(model, ts_np, ys)
    seconds = time.perf_counter() - start
    return SpiralResult(
        model=model,
        ts=ts_np,
        true_ys=true,
        pred_ys=pred,
        mse=float(np.mean((pred - true) ** 2)),
        mae=float(np.mean(np.abs(pred - true))),
        last_mse=float(history["validation"]["mse"][-1]),
        seconds=seconds,
        compile_seconds=compile_seconds,
        history={k: v for k, v in history.items() if k != "opt_state"},
        settings=s,
    )


def _full_prediction(model: NeuralODE, ts: np.ndarray, ys) -> np.ndarray:
    return np.asarray(_predict(model, ts, ys[None, 0], ts.shape[0])[0])


def torch_inputs(result: SpiralResult) -> dict[str, Any]:
    """The keyword arguments of `spiral_torch.fit_spiral_torch` that replay `result`'s
    run: same data, initial weights, batches (`cd.train`'s `batch_indices`), per-step
    learning rates, loss, solver and tolerances."""
    s = result.settings
    k_model, k_batch = jr.split(jr.PRNGKey(s["seed"]))
    initial = build_model(s, result.ts, k_model).field
    assert isinstance(initial, CubicField)  # as `build_model` made it
    n = result.ts.shape[0] - s["batch_time"]
    steps = jnp.arange(s["iterations"], dtype=jnp.int32)
    batches = jax.vmap(lambda i: batch_indices(k_batch, i, n, s["batch_size"]))(steps)
    _, schedule = make_optimizer(
        s["iterations"], s["learning_rate"], s["final_learning_rate"], s["weight_decay"]
    )
    return dict(
        ts=result.ts,
        ys=result.true_ys,
        weights=initial.weights(),
        batches=np.asarray(batches),
        learning_rates=np.asarray(jax.vmap(schedule)(steps)),
        batch_time=s["batch_time"],
        loss=s["loss"],
        rtol=s["rtol"],
        atol=s["atol"],
        method=s["solver"],
        eval_every=s["eval_every"],
        weight_decay=s["weight_decay"],
        keep_best=s["keep_best"],
    )


# -------------------------------------------------------------------------- plotting


def _field_grid(field: Callable, lim: float = 2.0, n: int = 21):
    grid = np.linspace(-lim, lim, n, dtype=np.float32)
    xx, yy = np.meshgrid(grid, grid)
    points = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], axis=-1))
    uv = np.asarray(jax.vmap(lambda y: field(0.0, y, None))(points))
    return xx, yy, uv[:, 0].reshape(xx.shape), uv[:, 1].reshape(xx.shape)


def plot_spiral(result: SpiralResult, path: str | os.PathLike) -> None:
    """Save the torchdiffeq demo's three panels: `x, y` against `t` (observed solid,
    learned dashed), the phase portrait, and the learned vector field (streamlines)
    over the true one (arrows).

    **Arguments:**

    - `result`: a [`SpiralResult`][].
    - `path`: the image file to write (format from the suffix, e.g. `.png`).
    """
    matplotlib = require("matplotlib", extra="plot")

    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot", extra="plot")

    ts, true, pred = result.ts, result.true_ys, result.pred_ys
    fig, (ax_t, ax_p, ax_f) = plt.subplots(1, 3, figsize=(15, 4.6))
    for k, (c, name) in enumerate((("tab:green", "x"), ("tab:blue", "y"))):
        ax_t.plot(ts, true[:, k], color=c, label=f"{name} observed")
        ax_t.plot(ts, pred[:, k], "--", color=c, label=f"{name} learned")
    ax_t.set(title="Trajectories", xlabel="t", ylabel="x, y")
    ax_t.legend(fontsize=8)
    ax_p.plot(true[:, 0], true[:, 1], "g-", label="observed")
    ax_p.plot(pred[:, 0], pred[:, 1], "b--", label="learned")
    ax_p.set(
        title=f"Phase portrait (MSE {result.mse:.2e})",
        xlabel="x",
        ylabel="y",
        xlim=(-2, 2),
        ylim=(-2, 2),
    )
    ax_p.legend(fontsize=8)
    xx, yy, u, v = _field_grid(result.model.field)
    ax_f.streamplot(xx, yy, u, v, color="tab:blue", density=1.0, linewidth=0.8)
    xx, yy, u, v = _field_grid(_true_field, n=11)
    norm = np.hypot(u, v) + 1e-12
    ax_f.quiver(xx, yy, u / norm, v / norm, color="tab:gray", alpha=0.7)
    ax_f.set(
        title="Learned field (streamlines), true (arrows)",
        xlabel="x",
        ylabel="y",
        xlim=(-2, 2),
        ylim=(-2, 2),
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------- CLI


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `fit-spiral` subcommand to an `argparse` subparsers object."""
    parser = subparsers.add_parser(
        "fit-spiral",
        help="fit a Neural ODE to the cubic spiral (torchdiffeq's ode_demo)",
        description=(
            "Learn dy/dt = (y**3) @ A from its trajectory, as in torchdiffeq's\n"
            "examples/ode_demo.py (Chen et al. 2018): batches of 20 ten-point\n"
            "segments, AdamW with cosine decay, dopri5. Writes spiral.png and\n"
            "spiral.json to --out and prints the full-trajectory MSE/MAE and wall\n"
            "time (and those of the same run in torchdiffeq with --compare-torch)."
        ),
    )
    parser.add_argument("--iterations", type=int, default=2000, help="optimiser steps")
    parser.add_argument("--seed", type=int, default=0, help="weights and batch order")
    parser.add_argument("--lr", type=float, default=3e-2, help="initial learning rate")
    parser.add_argument(
        "--final-lr",
        type=float,
        default=1e-5,
        help="learning rate at the end of the cosine decay",
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=1e-2,
        help="AdamW's decoupled weight decay",
    )
    parser.add_argument("--loss", choices=LOSSES, default="mse", help="segment loss")
    parser.add_argument(
        "--eval-every",
        type=int,
        default=50,
        help="steps between full-trajectory evaluations",
    )
    parser.add_argument(
        "--last",
        action="store_true",
        help="report the last iterate, not the best evaluated one",
    )
    parser.add_argument(
        "--out", default="contdepth-out/spiral", help="output directory"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--compare-torch",
        action="store_true",
        help="also run the fit in torch + torchdiffeq, if installed",
    )
    parser.set_defaults(func=run)
    return parser


def _torch_row(result: SpiralResult) -> dict[str, Any] | None:
    from . import spiral_torch

    if not spiral_torch.torch_available():
        print(spiral_torch.TORCH_MISSING)
        return None
    if result.settings["solver"] != "dopri5":
        print("torchdiffeq has no tsit5: the torch comparison was skipped.")
        return None
    out = spiral_torch.fit_spiral_torch(**torch_inputs(result))
    return {k: v for k, v in out.items() if k != "loss"}


def run(args: argparse.Namespace) -> int:
    """Run `contdepth fit-spiral`; returns the exit status."""
    from .._cli import markdown_table

    result = fit_spiral(
        iterations=args.iterations,
        seed=args.seed,
        learning_rate=args.lr,
        final_learning_rate=args.final_lr,
        weight_decay=args.weight_decay,
        loss=args.loss,
        eval_every=args.eval_every,
        keep_best=not args.last,
        progress=not args.no_progress,
    )
    torch_out = _torch_row(result) if args.compare_torch else None
    os.makedirs(args.out, exist_ok=True)
    plot_spiral(result, os.path.join(args.out, "spiral.png"))
    record = {
        "settings": result.settings,
        "mse": result.mse,
        "mae": result.mae,
        "last_mse": result.last_mse,
        "best_step": result.history["best_step"],
        "seconds": result.seconds,
        "compile_seconds": result.compile_seconds,
        "validation": {k: v.tolist() for k, v in result.history["validation"].items()},
        "train_loss": result.history["loss"].tolist(),
        "torch": torch_out,
    }
    with open(os.path.join(args.out, "spiral.json"), "w") as f:
        json.dump(record, f, indent=2)
    rows = [
        [
            "contdepth (JAX)",
            result.mse,
            result.mae,
            result.last_mse,
            result.seconds,
            result.compile_seconds,
        ]
    ]
    if torch_out is not None:
        rows.append(
            [
                "torchdiffeq",
                torch_out["mse"],
                torch_out["mae"],
                torch_out["last_mse"],
                torch_out["seconds"],
                "-",
            ]
        )
    print()
    print(
        markdown_table(
            [
                "run",
                "full-trajectory MSE",
                "MAE",
                "last-iterate MSE",
                "wall s",
                "compile s",
            ],
            rows,
        )
    )
    print(f"\nwrote {args.out}/spiral.png and {args.out}/spiral.json")
    return 0
