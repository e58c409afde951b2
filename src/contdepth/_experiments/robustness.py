"""The robustness trade-off of Jacobian control: digits classifiers trained plainly,
with the Jacobian Frobenius regulariser of RNODE, or with a spectrally normalised
field, compared on accuracy, the input-to-logits Jacobian's `sigma_max` and the
worst-case change of the logits under input perturbations of a given norm.

Every classifier is `Linear(64, dim) -> body -> Linear(dim, 10)` on scikit-learn's
digits ([`contdepth.datasets.digits`][]), `body` an [`contdepth.EulerResNet`][] (or a
[`contdepth.NeuralODE`][]) on a one-hidden-layer tanh field:

- `plain`: an [`contdepth.MLPField`][], cross-entropy;
- `jacobian`: the same, cross-entropy `+ lam * mean_i int ||J_F||_F^2 dt` (exact, from
    [`contdepth.regularised_solve`][]; Finlay et al. 2020);
- `spectral`: a [`contdepth.SpectralNormMLPField`][] with `Lip(F) <= bound`
    (Miyato et al. 2018), cross-entropy.

Worst-case output change: for each test point, `max ||f(x + delta) - f(x)||_2` over
`||delta||_2 <= eps`, estimated (a lower bound) by projected normalised gradient
ascent from a random start on the sphere of radius `eps / 2`.
"""

import argparse
import dataclasses
import os
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .. import datasets
from .._classifier import Classifier
from .._control.regularised_solve import regularised_solve
from .._control.spectral_norm import SpectralNormMLPField
from .._fields.mlp import MLPField
from .._jacobian.dense import jacobian
from .._models.euler import EulerResNet
from .._models.neural_ode import NeuralODE
from .._optional import require
from .._outputs import write_figure_and_record
from .._train.evaluate import evaluate
from .._train.loss import cross_entropy
from .._train.train import train
from .._validation import (
    check_key,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
)


VARIANTS = ("plain", "jacobian", "spectral")
BODIES = ("euler", "ode")
EPSILONS = (0.25, 0.5, 1.0, 2.0)


def _body(kind: str, field, depth: int, horizon: float):
    if kind == "euler":
        return EulerResNet(field, depth, horizon)
    return NeuralODE(field, horizon, rtol=1e-3, atol=1e-5)


def make_robustness_classifier(
    variant: str,
    *,
    body: str = "euler",
    num_features: int = 64,
    num_classes: int = 10,
    dim: int = 16,
    width: int = 32,
    depth: int = 8,
    horizon: float = 1.0,
    bound: float = 1.0,
    key: PRNGKeyArray,
) -> Classifier:
    """The classifier of one variant: `Linear -> body -> Linear`, the body's field an
    `MLPField(dim, width, 1, tanh)` (`"plain"`, `"jacobian"`) or a
    `SpectralNormMLPField(dim, width, 1, bound=bound)` (`"spectral"`); the same key
    gives the same encoder and readout for every variant."""
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}, got {variant!r}.")
    if body not in BODIES:
        raise ValueError(f"`body` must be one of {BODIES}, got {body!r}.")
    k_enc, k_field, k_out = jr.split(check_key("key", key), 3)
    if variant == "spectral":
        field = SpectralNormMLPField(dim, width, 1, bound=bound, key=k_field)
    else:
        field = MLPField(dim, width, 1, activation=jax.nn.tanh, key=k_field)
    return Classifier(
        eqx.nn.Linear(num_features, dim, key=k_enc),
        _body(body, field, depth, horizon),
        eqx.nn.Linear(dim, num_classes, key=k_out),
    )


def jacobian_loss(lam: float):
    """`loss_fn(model, x, labels)`: cross-entropy plus `lam` times the batch mean of
    the body's exact Jacobian Frobenius integral; aux is that mean."""

    def loss_fn(model, x, labels):
        def one(xi):
            y, reg = regularised_solve(
                model.body,
                model.encoder(xi),
                kinetic=False,
                frobenius=True,
                exact=True,
            )
            assert reg.frobenius is not None  # requested above
            return model.readout(y), reg.frobenius

        logits, frob = jax.vmap(one)(x)
        ce = jnp.mean(
            jax.nn.logsumexp(logits, axis=-1)
            - jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
        )
        return ce + lam * jnp.mean(frob), jnp.mean(frob)

    return loss_fn


@eqx.filter_jit
def input_sigma_max(model, x: Float[Array, "n features"]) -> Float[Array, " n"]:
    """`sigma_max(d logits / d x)` at every row of `x` (dense `cd.jacobian`)."""
    return jax.vmap(
        lambda xi: jnp.linalg.svd(jacobian(model, xi), compute_uv=False)[0]
    )(x)


@eqx.filter_jit
def worst_case_change(
    model, x: Float[Array, "n features"], eps, key, num_iters: int = 10
) -> Float[Array, " n"]:
    """A lower bound on `max_{||delta|| <= eps} ||model(x + delta) - model(x)||_2` per
    row of `x`: `num_iters` steps of projected normalised gradient ascent (step
    `2.5 eps / num_iters`) from a random point of norm `eps / 2`, keeping the best
    iterate."""

    def one(xi, k):
        f0 = model(xi)

        def change(d):
            return jnp.sum((model(xi + d) - f0) ** 2)

        d = jr.normal(k, xi.shape, xi.dtype)
        d = 0.5 * eps * d / jnp.linalg.norm(d)

        def step(carry, _):
            d, best = carry
            value, g = jax.value_and_grad(change)(d)
            best = jnp.maximum(best, value)
            d = d + (2.5 * eps / num_iters) * g / (jnp.linalg.norm(g) + 1e-30)
            d = d * jnp.minimum(1.0, eps / jnp.linalg.norm(d))
            return (d, best), None

        (d, best), _ = jax.lax.scan(step, (d, jnp.zeros((), xi.dtype)), None, num_iters)
        return jnp.sqrt(jnp.maximum(best, change(d)))

    return jax.vmap(one)(x, jr.split(key, x.shape[0]))


@dataclasses.dataclass(frozen=True)
class RobustnessResult:
    """What [`run_robustness`][contdepth.experiments.run_robustness] returns: per
    trained model (e.g. `"plain"`, `"jacobian lam=0.1"`) a dict with `variant`, its
    `lam` or `bound`, `test_accuracy`, `train_accuracy`, `sigma_max_mean`,
    `sigma_max_max` (of `d logits / d x` over the measured test points), `change_max`
    and `change_mean` (per `eps` in `epsilons`, the worst-case logit change found),
    `seconds` (training wall time) and `loss` (per step); `settings` every setting."""

    variants: dict[str, dict[str, Any]]
    epsilons: tuple[float, ...]
    settings: dict[str, Any]


def run_robustness(
    *,
    key: PRNGKeyArray,
    variants: tuple[str, ...] = VARIANTS,
    body: str = "euler",
    steps: int = 400,
    batch_size: int = 128,
    lr: float = 3e-3,
    lams: tuple[float, ...] = (0.1, 1.0),
    bounds: tuple[float, ...] = (1.0,),
    dim: int = 16,
    width: int = 32,
    depth: int = 8,
    horizon: float = 1.0,
    epsilons: tuple[float, ...] = EPSILONS,
    num_test: int = 200,
    attack_iters: int = 10,
    data=None,
) -> RobustnessResult:
    """Train one digits classifier per variant (`"plain"`, `"jacobian"`,
    `"spectral"`) with the same budget and measure the robustness trade-off: test
    accuracy, `sigma_max` of `d logits / d x` and the worst-case logit change under
    perturbations of norm `eps`.

    **Arguments:**

    - `key`: a `jax.random.PRNGKey` (weights, batch order, attack starts; every
        variant gets the same weight and batch keys).
    - `variants`: which of `VARIANTS` to train; `"jacobian"` is trained once per
        `lams` entry and `"spectral"` once per `bounds` entry (the trade-off curve),
        named e.g. `"jacobian lam=0.1"`, `"spectral bound=1"`.
    - `body`: `"euler"` (`EulerResNet`, `depth` steps) or `"ode"` (`NeuralODE`,
        Tsit5, `rtol=1e-3`, `atol=1e-5`).
    - `steps`, `batch_size`, `lr`: Adam training budget.
    - `lams`: weights of the Jacobian Frobenius regulariser (`"jacobian"`).
    - `bounds`: the spectral variant's Lipschitz bounds on its field.
    - `dim`, `width`, `depth`, `horizon`: the architecture.
    - `epsilons`: perturbation norms (the standardised inputs have norm about 8).
    - `num_test`: test points at which `sigma_max` and the worst case are measured
        (accuracy uses the whole test set).
    - `attack_iters`: gradient-ascent steps per point and `eps`.
    - `data`: `((x_train, y_train), (x_test, y_test))`; default `cd.datasets.digits()`.

    **Returns:**

    A [`RobustnessResult`][contdepth.experiments.RobustnessResult].

    References: Finlay et al. 2020, "How to train your neural ODE"; Miyato et al. 2018,
    "Spectral Normalization for Generative Adversarial Networks"; Hoffman, Roberts &
    Yaida 2019, "Robust learning with Jacobian regularization".
    """
    check_key("key", key)
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"`variants` must hold names from {VARIANTS}, got {v!r}.")
    if body not in BODIES:
        raise ValueError(f"`body` must be one of {BODIES}, got {body!r}.")
    steps = check_positive_int("steps", steps)
    batch_size = check_positive_int("batch_size", batch_size)
    lr = check_positive_float("lr", lr)
    lams = tuple(check_nonnegative_float("lams[i]", v) for v in lams)
    bounds = tuple(check_positive_float("bounds[i]", v) for v in bounds)
    runs = []
    for v in variants:
        if v == "plain":
            runs.append(("plain", v, {}))
        elif v == "jacobian":
            runs += [(f"jacobian lam={lam:g}", v, {"lam": lam}) for lam in lams]
        else:
            runs += [(f"spectral bound={b:g}", v, {"bound": b}) for b in bounds]
    num_test = check_positive_int("num_test", num_test)
    attack_iters = check_positive_int("attack_iters", attack_iters)
    epsilons = tuple(check_positive_float("epsilons[i]", e) for e in epsilons)
    dtype = jnp.result_type(float)
    (x_tr, y_tr), (x_te, y_te) = datasets.digits() if data is None else data
    x_tr, x_te = x_tr.astype(dtype), x_te.astype(dtype)
    x_m = x_te[:num_test]
    k_model, k_batch, k_attack = jr.split(key, 3)

    out = {}
    for name, variant, options in runs:
        model = make_robustness_classifier(
            variant,
            body=body,
            num_features=x_tr.shape[1],
            num_classes=int(max(int(y_tr.max()), int(y_te.max())) + 1),
            dim=dim,
            width=width,
            depth=depth,
            horizon=horizon,
            bound=options.get("bound", 1.0),
            key=k_model,
        )
        model = jax.tree.map(
            lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, model
        )
        loss_fn = (
            jacobian_loss(options["lam"]) if variant == "jacobian" else cross_entropy
        )
        model, history = train(
            model,
            (x_tr, y_tr),
            steps=steps,
            batch_size=min(batch_size, len(y_tr)),
            key=k_batch,
            loss_fn=loss_fn,
            optimizer=optax.adam(lr),
            progress=False,
        )
        sigma = np.asarray(input_sigma_max(model, x_m))
        changes = [
            np.asarray(worst_case_change(model, x_m, eps, k_attack, attack_iters))
            for eps in epsilons
        ]
        out[name] = {
            "variant": variant,
            **options,
            "test_accuracy": evaluate(model, (x_te, y_te))["accuracy"],
            "train_accuracy": evaluate(model, (x_tr, y_tr))["accuracy"],
            "sigma_max_mean": float(sigma.mean()),
            "sigma_max_max": float(sigma.max()),
            "change_max": [float(c.max()) for c in changes],
            "change_mean": [float(c.mean()) for c in changes],
            "seconds": float(history["seconds"]),
            "loss": np.asarray(history["loss"]),
        }
    settings = dict(
        body=body,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        optimiser="adam",
        lams=list(lams),
        bounds=list(bounds),
        dim=dim,
        width=width,
        depth=depth,
        horizon=horizon,
        num_test=num_test,
        attack_iters=attack_iters,
        attack="projected normalised L2 gradient ascent, step 2.5 eps / iters, random "
        "start of norm eps / 2, best iterate",
        jacobian_regulariser="lam * mean_i int ||J_F||_F^2 dt (exact, "
        "cd.regularised_solve)",
        spectral_field="SpectralNormMLPField(dim, width, 1, bound=bound)",
        dtype=str(dtype),
    )
    return RobustnessResult(variants=out, epsilons=epsilons, settings=settings)


# -------------------------------------------------------------------------- plotting


def plot_robustness(result: RobustnessResult, path: str | os.PathLike | None = None):
    """`sigma_max` (mean, bar to the max) against test accuracy per variant, and the
    worst-case logit change against `eps`; saved to `path` when given."""
    plt = require("matplotlib.pyplot", extra="plot")

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.2))
    eps = np.asarray(result.epsilons)
    for i, (name, v) in enumerate(result.variants.items()):
        color = f"C{i}"
        ax0.errorbar(
            v["test_accuracy"],
            v["sigma_max_mean"],
            yerr=[[0.0], [v["sigma_max_max"] - v["sigma_max_mean"]]],
            fmt="o",
            color=color,
            capsize=3,
            label=name,
        )
        ax1.plot(eps, v["change_max"], "o-", color=color, label=f"{name}: max")
        ax1.plot(
            eps, v["change_mean"], "s--", color=color, alpha=0.6, label=f"{name}: mean"
        )
    ax0.set(
        xlabel="test accuracy",
        ylabel="sigma_max(d logits / dx) (mean, bar: max)",
        title="Jacobian norm vs accuracy",
    )
    ax0.legend(fontsize=8)
    ax1.set(
        xscale="log",
        yscale="log",
        xlabel="eps = ||delta||_2",
        ylabel="||f(x + delta) - f(x)||_2 (worst found)",
        title="worst-case output change",
    )
    ax1.legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


# ------------------------------------------------------------------------------- CLI


def summary(result: RobustnessResult) -> str:
    """The Markdown table `run` prints."""
    from .._cli import markdown_table

    headers = ["variant", "test acc", "sigma_max mean", "sigma_max max"]
    headers += [f"max change eps={e:g}" for e in result.epsilons] + ["seconds"]
    rows = [
        [
            name,
            v["test_accuracy"],
            v["sigma_max_mean"],
            v["sigma_max_max"],
            *v["change_max"],
            v["seconds"],
        ]
        for name, v in result.variants.items()
    ]
    return markdown_table(headers, rows)


def write_outputs(
    result: RobustnessResult, out: str | os.PathLike, **extra
) -> dict[str, Any]:
    """Write `robustness.json` (every number and setting, and `extra`) and
    `robustness.png` to the directory `out`; returns the JSON record."""
    variants = {
        name: {
            k: (x.tolist() if isinstance(x, np.ndarray) else x) for k, x in v.items()
        }
        for name, v in result.variants.items()
    }
    record = {
        "settings": result.settings,
        "epsilons": list(result.epsilons),
        "results": variants,
        **extra,
    }
    return write_figure_and_record(
        out, "robustness", lambda path: plot_robustness(result, path), record
    )


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `robustness` subcommand to an `argparse` subparsers object."""
    parser = subparsers.add_parser(
        "robustness",
        help="plain vs Jacobian-regularised vs spectrally normalised digits "
        "classifiers: sigma_max, worst-case output change, accuracy",
        description=(
            "Train digits classifiers (Linear -> Euler ResNet or Neural ODE ->\n"
            "Linear) plainly, with the exact Jacobian Frobenius regulariser\n"
            "(Finlay et al. 2020) and with a spectrally normalised field (Miyato et\n"
            "al. 2018), and report test accuracy, sigma_max of d logits / dx and the\n"
            "worst-case logit change under L2 input perturbations of norm eps.\n"
            "Writes robustness.json and robustness.png to --out."
        ),
    )
    parser.add_argument("--body", choices=BODIES, default="euler", help="depth model")
    parser.add_argument("--steps", type=int, default=400, help="optimiser steps")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument(
        "--lam",
        type=float,
        nargs="+",
        default=[0.1, 1.0],
        help="Jacobian Frobenius regulariser weights (one model each)",
    )
    parser.add_argument(
        "--bound",
        type=float,
        nargs="+",
        default=[1.0],
        help="Lipschitz bounds of the spectrally normalised field (one model each)",
    )
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed")
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="contdepth-out/robustness",
        help="output directory",
    )
    parser.add_argument("--x64", action="store_true", help="compute in float64")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run `contdepth robustness`; returns the exit status."""
    start = time.perf_counter()
    result = run_robustness(
        key=jr.PRNGKey(args.seed),
        body=args.body,
        steps=args.steps,
        lr=args.lr,
        lams=tuple(args.lam),
        bounds=tuple(args.bound),
    )
    seconds = time.perf_counter() - start
    write_outputs(result, args.out, seed=args.seed, seconds=seconds)
    print(summary(result))
    print(
        f"\nwrote {args.out}/robustness.png and {args.out}/robustness.json "
        f"({seconds:.1f} s)"
    )
    return 0
