"""Train a continuous normalising flow on a 2-D toy density with and without RNODE
regularisation, and compare test log-likelihood, function evaluations per solve and
wall time side by side, as RNODE does for FFJORD; check that the exact and Hutchinson
log-likelihoods of the trained flow agree.

References: Grathwohl et al. 2019, "FFJORD"; Finlay et al. 2020, "How to train your
neural ODE: the world of Jacobian and kinetic regularization".
"""

import argparse
import dataclasses
import json
import math
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

from .._fields.mlp import MLPField
from .._models.neural_ode import NeuralODE
from .._optional import require
from .._train.train import train
from .._validation import (
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
)
from .densities import DENSITIES, sample_density
from .flow import cnf_log_prob, cnf_sample


def build_cnf(
    *,
    width: int = 64,
    depth: int = 2,
    horizon: float = 1.0,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    key,
) -> NeuralODE:
    """The demo's flow: a time-dependent tanh `cd.MLPField(2, width, depth)` in a
    `cd.NeuralODE` on `[0, horizon]`, solved by adaptive `diffrax.Dopri5` at
    `rtol`, `atol` (FFJORD's and RNODE's solver)."""
    field = MLPField(
        2, width, depth, activation=jax.nn.tanh, time_dependent=True, key=key
    )
    return NeuralODE(field, horizon, solver=diffrax.Dopri5(), rtol=rtol, atol=atol)


def make_cnf_loss(lam_kinetic: float = 0.0, lam_jacobian: float = 0.0):
    """`loss_fn(model, x, _)` for [`contdepth.train`][]: the mean negative
    log-likelihood of the batch `x` `(batch, 2)` (exact trace), plus `lam_kinetic`
    times the mean kinetic energy and `lam_jacobian` times the mean Jacobian
    Frobenius integral (RNODE), all from one solve per sample."""
    lam_kinetic = check_nonnegative_float("lam_kinetic", lam_kinetic)
    lam_jacobian = check_nonnegative_float("lam_jacobian", lam_jacobian)
    kinetic, frobenius = lam_kinetic > 0, lam_jacobian > 0

    def loss_fn(model, x, _):
        out = jax.vmap(
            lambda xi: cnf_log_prob(model, xi, kinetic=kinetic, frobenius=frobenius)
        )(x)
        loss = -jnp.mean(out.log_prob)
        if out.kinetic is not None:
            loss = loss + lam_kinetic * jnp.mean(out.kinetic)
        if out.frobenius is not None:
            loss = loss + lam_jacobian * jnp.mean(out.frobenius)
        return loss

    return loss_fn


@eqx.filter_jit
def _evaluate(model, x):
    out = jax.vmap(lambda xi: cnf_log_prob(model, xi))(x)
    return out.log_prob, out.num_evaluations


@eqx.filter_jit
def _hutchinson(model, x, key, probe, num_probes):
    keys = jr.split(key, x.shape[0])
    out = jax.vmap(
        lambda xi, k: cnf_log_prob(
            model, xi, trace="hutchinson", key=k, probe=probe, num_probes=num_probes
        )
    )(x, keys)
    return out.log_prob, out.stderr


def _mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


@dataclasses.dataclass(frozen=True)
class CNFRun:
    """One trained flow of
    [`compare_cnf_regularisation`][contdepth.experiments.compare_cnf_regularisation].

    - `name`: `"unregularised"` or `"RNODE"`; `lam_kinetic`, `lam_jacobian`.
    - `model`: the trained `NeuralODE`.
    - `test_log_likelihood`, `test_stderr`: mean exact `log p` over the test set and
        its standard error (over test points).
    - `nfe`, `nfe_max`: mean and largest field evaluations per forward (log-density)
        solve over the test set; `num_steps` the mean solver steps.
    - `train_seconds`: wall time of training (compilation excluded, `compile_seconds`).
    - `eval_seconds`: wall time of the compiled test-set evaluation.
    - `loss`: the training loss per step.
    """

    name: str
    lam_kinetic: float
    lam_jacobian: float
    model: NeuralODE
    test_log_likelihood: float
    test_stderr: float
    nfe: float
    nfe_max: int
    train_seconds: float
    compile_seconds: float
    eval_seconds: float
    loss: np.ndarray


@dataclasses.dataclass(frozen=True)
class CNFComparison:
    """What
    [`compare_cnf_regularisation`][contdepth.experiments.compare_cnf_regularisation]
    returns: `runs` (unregularised, RNODE), `trace_check` (exact vs Hutchinson on the
    RNODE flow: one dict per probe kind), `test_data`, `settings`."""

    runs: list[CNFRun]
    trace_check: list[dict[str, Any]]
    test_data: np.ndarray
    settings: dict[str, Any]


def _train_one(name, lam_k, lam_j, s, data, key_model, key_batch, progress):
    model = build_cnf(
        width=s["width"],
        depth=s["depth"],
        horizon=s["horizon"],
        rtol=s["rtol"],
        atol=s["atol"],
        key=key_model,
    )
    kwargs: dict[str, Any] = dict(
        batch_size=s["batch_size"],
        key=key_batch,
        loss_fn=make_cnf_loss(lam_k, lam_j),
        optimizer=optax.adam(s["learning_rate"]),
    )
    targets = jnp.zeros(data.shape[0], data.dtype)
    start = time.perf_counter()
    train(model, (data, targets), steps=1, progress=False, **kwargs)
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    model, history = train(
        model, (data, targets), steps=s["steps"], progress=progress, **kwargs
    )
    jax.block_until_ready(eqx.filter(model, eqx.is_array))
    return name, model, time.perf_counter() - start, compile_seconds, history


def compare_cnf_regularisation(
    density: str = "eight-gaussians",
    *,
    steps: int = 400,
    batch_size: int = 256,
    learning_rate: float = 1e-2,
    width: int = 32,
    depth: int = 2,
    horizon: float = 1.0,
    lam_kinetic: float = 0.01,
    lam_jacobian: float = 0.01,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    num_train: int = 20_000,
    num_test: int = 2_000,
    num_probes: int = 4,
    seed: int = 0,
    progress: bool = True,
) -> CNFComparison:
    """Train the same CNF twice on `density` — unregularised and with RNODE's
    kinetic + Jacobian-Frobenius penalties — with the same initial weights, batches,
    optimiser and Dopri5 tolerances, then measure on a held-out test set: exact
    test log-likelihood (mean +- s.e.), field evaluations per forward solve, training
    and evaluation wall time; and, on the regularised flow, the exact against the
    Hutchinson log-likelihood (Rademacher and Gaussian probes, `num_probes` per
    point, fixed over each solve).

    Training uses the exact trace (cheap in 2-D: two Jacobian-vector products per
    evaluation) and the exact Frobenius norm.

    References: Grathwohl et al. 2019, "FFJORD"; Finlay et al. 2020, "How to train
    your neural ODE".

    **Arguments:**

    - `density`: `"eight-gaussians"`, `"two-moons"` or `"checkerboard"`.
    - `steps`, `batch_size`, `learning_rate`: Adam training.
    - `width`, `depth`, `horizon`: the field `cd.MLPField(2, width, depth,
        time_dependent=True)` and the flow's `T`.
    - `lam_kinetic`, `lam_jacobian`: RNODE's weights (0.01 each, as in RNODE).
    - `rtol`, `atol`: Dopri5 tolerances, training and evaluation.
    - `num_train`, `num_test`: sizes of the training and test samples.
    - `num_probes`: Hutchinson probes per test point in the trace check (>= 2).
    - `seed`: seeds the data, the weights, the batches and the probes.
    - `progress`: show progress bars.

    **Returns:** a [`CNFComparison`][contdepth.experiments.CNFComparison].
    """
    if density not in DENSITIES:
        raise ValueError(
            f"`density` must be one of {sorted(DENSITIES)}, got {density!r}."
        )
    s: dict[str, Any] = dict(
        density=density,
        steps=check_positive_int("steps", steps),
        batch_size=check_positive_int("batch_size", batch_size),
        learning_rate=check_positive_float("learning_rate", learning_rate),
        width=check_positive_int("width", width),
        depth=check_positive_int("depth", depth),
        horizon=check_positive_float("horizon", horizon),
        lam_kinetic=check_nonnegative_float("lam_kinetic", lam_kinetic),
        lam_jacobian=check_nonnegative_float("lam_jacobian", lam_jacobian),
        rtol=check_positive_float("rtol", rtol),
        atol=check_positive_float("atol", atol),
        num_train=check_positive_int("num_train", num_train),
        num_test=check_positive_int("num_test", num_test),
        num_probes=check_positive_int("num_probes", num_probes),
        seed=int(seed),
        solver="dopri5",
        optimizer="adam",
        trace_in_training="exact",
        dtype=str(jnp.zeros(()).dtype),
    )
    if s["lam_kinetic"] == 0 and s["lam_jacobian"] == 0:
        raise ValueError(
            "`lam_kinetic=0` and `lam_jacobian=0` make the RNODE flow the "
            "unregularised one: set at least one (RNODE uses 0.01 each)."
        )
    if s["num_probes"] < 2:
        raise ValueError(
            f"`num_probes` must be >= 2 for a standard error over probes, got "
            f"{num_probes}."
        )
    if s["batch_size"] > s["num_train"]:
        raise ValueError(
            f"`batch_size` ({batch_size}) must not exceed `num_train` ({num_train})."
        )
    k_train, k_test, k_model, k_batch, k_probe = jr.split(jr.PRNGKey(s["seed"]), 5)
    dtype = jnp.zeros(()).dtype
    data = sample_density(density, s["num_train"], k_train).astype(dtype)
    test = sample_density(density, s["num_test"], k_test).astype(dtype)
    runs = []
    for name, lam_k, lam_j in (
        ("unregularised", 0.0, 0.0),
        ("RNODE", s["lam_kinetic"], s["lam_jacobian"]),
    ):
        name, model, seconds, compile_seconds, history = _train_one(
            name, lam_k, lam_j, s, data, k_model, k_batch, progress
        )
        _evaluate(model, test)  # compile
        start = time.perf_counter()
        log_p, nfe = jax.block_until_ready(_evaluate(model, test))
        eval_seconds = time.perf_counter() - start
        mean, se = _mean_se(log_p)
        runs.append(
            CNFRun(
                name=name,
                lam_kinetic=lam_k,
                lam_jacobian=lam_j,
                model=model,
                test_log_likelihood=mean,
                test_stderr=se,
                nfe=float(np.mean(np.asarray(nfe))),
                nfe_max=int(np.max(np.asarray(nfe))),
                train_seconds=seconds,
                compile_seconds=compile_seconds,
                eval_seconds=eval_seconds,
                loss=np.asarray(history["loss"]),
            )
        )
    trace_check = []
    exact, _ = _evaluate(runs[-1].model, test)
    for probe, key in zip(("rademacher", "gaussian"), jr.split(k_probe)):
        hutch, stderr = _hutchinson(runs[-1].model, test, key, probe, s["num_probes"])
        diff = np.asarray(hutch, np.float64) - np.asarray(exact, np.float64)
        d_mean, d_se = _mean_se(diff)
        trace_check.append(
            dict(
                probe=probe,
                num_probes=s["num_probes"],
                exact=float(np.mean(np.asarray(exact))),
                hutchinson=float(np.mean(np.asarray(hutch))),
                difference=d_mean,
                difference_stderr=d_se,
                z_score=d_mean / d_se,
                mean_per_point_stderr=float(np.mean(np.asarray(stderr))),
            )
        )
    return CNFComparison(runs, trace_check, np.asarray(test), s)


# -------------------------------------------------------------------------- plotting


def _grid(lim: float, n: int):
    axis = np.linspace(-lim, lim, n)
    xx, yy = np.meshgrid(axis, axis)
    return xx, yy, np.stack([xx.ravel(), yy.ravel()], axis=-1)


def plot_cnf(
    result: CNFComparison,
    path: str | os.PathLike | None = None,
    *,
    lim: float = 4.0,
    n: int = 60,
    num_samples: int = 2000,
    key=None,
) -> None:
    """Save the density heat maps: the data's histogram, and for each trained flow
    its density `exp(log p)` on an `n x n` grid over `[-lim, lim]^2` and a histogram
    of `num_samples` of its samples; saved to `path` when given. Returns the figure."""
    plt = require("matplotlib.pyplot", extra="plot")

    key = jr.PRNGKey(result.settings["seed"] + 1) if key is None else key
    dtype = jnp.zeros(()).dtype
    xx, yy, points = _grid(lim, n)
    bins = np.linspace(-lim, lim, n + 1)
    runs = result.runs
    fig, axes = plt.subplots(len(runs), 3, figsize=(11, 3.7 * len(runs)))
    for row, (run, k) in enumerate(zip(runs, jr.split(key, len(runs)))):
        log_p, _ = _evaluate(run.model, jnp.asarray(points, dtype))
        density = np.exp(np.asarray(log_p)).reshape(xx.shape)
        samples = np.asarray(cnf_sample(run.model, k, num_samples, dtype=dtype))
        ax_data, ax_density, ax_samples = axes[row]
        ax_data.hist2d(*result.test_data.T, bins=bins, cmap="magma")
        ax_data.set_title(f"data ({result.settings['density']})")
        ax_density.pcolormesh(xx, yy, density, cmap="magma", shading="auto")
        ax_density.set_title(
            f"{run.name}: p(x), test LL {run.test_log_likelihood:.3f}, "
            f"NFE {run.nfe:.0f}",
            fontsize=9,
        )
        ax_samples.hist2d(*samples.T, bins=bins, cmap="magma")
        ax_samples.set_title(f"{run.name}: {num_samples} samples", fontsize=9)
        for ax in axes[row]:
            ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


# ------------------------------------------------------------------------------- CLI


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `fit-cnf` subcommand to an `argparse` subparsers object."""
    parser = subparsers.add_parser(
        "fit-cnf",
        help="train a continuous normalising flow on a 2-D density, with and "
        "without RNODE regularisation",
        description=(
            "Train the same CNF (time-dependent tanh MLP field, Dopri5) on a 2-D toy\n"
            "density twice, unregularised and with RNODE's kinetic + Jacobian\n"
            "penalties (Finlay et al. 2020); print test log-likelihood, field\n"
            "evaluations per solve and wall time side by side, and the exact vs\n"
            "Hutchinson log-likelihood of the trained flow. Writes cnf.json and\n"
            "cnf.png (density heat maps and samples) to --out."
        ),
    )
    parser.add_argument(
        "--density",
        choices=sorted(DENSITIES),
        default="eight-gaussians",
        help="the 2-D toy density",
    )
    parser.add_argument("--steps", type=int, default=400, help="Adam steps per flow")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    parser.add_argument("--width", type=int, default=32, help="hidden width")
    parser.add_argument(
        "--lam-kinetic", type=float, default=0.01, help="RNODE kinetic-energy weight"
    )
    parser.add_argument(
        "--lam-jacobian",
        type=float,
        default=0.01,
        help="RNODE Jacobian-Frobenius weight",
    )
    parser.add_argument("--rtol", type=float, default=1e-5, help="Dopri5 rtol")
    parser.add_argument("--atol", type=float, default=1e-5, help="Dopri5 atol")
    parser.add_argument(
        "--num-probes",
        type=int,
        default=4,
        help="Hutchinson probes per test point in the trace check",
    )
    parser.add_argument("--seed", type=int, default=0, help="data, weights, batches")
    parser.add_argument("--out", default="contdepth-out/cnf", help="output directory")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run `contdepth fit-cnf`; returns the exit status."""
    from .._cli import markdown_table

    start = time.perf_counter()
    result = compare_cnf_regularisation(
        args.density,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        width=args.width,
        lam_kinetic=args.lam_kinetic,
        lam_jacobian=args.lam_jacobian,
        rtol=args.rtol,
        atol=args.atol,
        num_probes=args.num_probes,
        seed=args.seed,
        progress=not args.no_progress,
    )
    os.makedirs(args.out, exist_ok=True)
    fig = plot_cnf(result, os.path.join(args.out, "cnf.png"))
    require("matplotlib.pyplot", extra="plot").close(fig)
    total = time.perf_counter() - start
    record = {
        "settings": result.settings,
        "runs": [
            {
                f.name: getattr(r, f.name)
                for f in dataclasses.fields(r)
                if f.name not in ("model", "loss")
            }
            | {"final_loss": float(r.loss[-1])}
            for r in result.runs
        ],
        "trace_check": result.trace_check,
        "total_seconds": total,
        "load_average": list(os.getloadavg()),
    }
    with open(os.path.join(args.out, "cnf.json"), "w") as f:
        json.dump(record, f, indent=2)
    print()
    print(
        markdown_table(
            [
                "flow",
                "test log-likelihood",
                "s.e.",
                "NFE/solve (mean)",
                "NFE (max)",
                "train s",
                "eval s",
            ],
            [
                [
                    r.name,
                    r.test_log_likelihood,
                    r.test_stderr,
                    r.nfe,
                    r.nfe_max,
                    r.train_seconds,
                    r.eval_seconds,
                ]
                for r in result.runs
            ],
        )
    )
    print()
    print(
        markdown_table(
            [
                "probe",
                "probes/point",
                "exact LL",
                "Hutchinson LL",
                "difference",
                "s.e.",
                "z",
            ],
            [
                [
                    c["probe"],
                    c["num_probes"],
                    c["exact"],
                    c["hutchinson"],
                    c["difference"],
                    c["difference_stderr"],
                    c["z_score"],
                ]
                for c in result.trace_check
            ],
        )
    )
    print(f"\nwrote {args.out}/cnf.png and {args.out}/cnf.json ({total:.0f} s)")
    return 0
