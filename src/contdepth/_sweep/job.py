"""The main job: train a small Euler ResNet on digits, then re-run the *same learned
field* at every depth `N` and as a Neural ODE (`contdepth sweep`)."""

import dataclasses
import os
import time
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.random as jr
import optax

from .. import datasets
from .._models.neural_ode import NeuralODE
from .._train.evaluate import evaluate
from .._train.train import train
from .._validation import check_positive_float, check_positive_int
from .._zoo import make_classifier
from .families import EulerFamily
from .result import DepthSweep
from .sweep import check_steps, depth_sweep


DEFAULT_JOB_STEPS = (8, 16, 32, 64, 128, 256, 512, 1024)


@dataclasses.dataclass(frozen=True)
class LearnedSweep:
    """What `contdepth sweep` produces: the trained classifier, its depth sweep (with
    test accuracy per `N`) and timings."""

    classifier: eqx.Module
    sweep: DepthSweep
    train_seconds: float
    sweep_seconds: float


def learned_depth_sweep(
    *,
    dim: int = 32,
    width: int = 64,
    horizon: float = 1.0,
    train_depth: int = 8,
    steps: Sequence[int] = DEFAULT_JOB_STEPS,
    train_steps: int = 500,
    num_states: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> LearnedSweep:
    """Train `Linear -> EulerResNet(F, train_depth, horizon) -> Linear` on digits, then
    evaluate the learned `F` at every depth in `steps` (test accuracy and the spectrum
    of `dy_N/dy_0` at `num_states` encoded test images) and as a `NeuralODE`, with the
    untrained baselines of [`contdepth.depth_sweep`][].

    **Returns:** a `LearnedSweep` whose `.sweep` has an `"accuracy"` column for the
    Euler family and `reference["accuracy"]` for the Neural ODE.
    """
    dim = check_positive_int("dim", dim)
    width = check_positive_int("width", width)
    horizon = check_positive_float("horizon", horizon)
    train_depth = check_positive_int("train_depth", train_depth)
    steps = check_steps(steps)
    train_steps = check_positive_int("train_steps", train_steps)
    num_states = check_positive_int("num_states", num_states)
    k_model, k_train, k_sweep = jr.split(jr.PRNGKey(seed), 3)
    train_data, test_data = datasets.digits()
    clf = make_classifier(
        "euler",
        num_features=train_data[0].shape[1],
        num_classes=10,
        dim=dim,
        width=width,
        depth=train_depth,
        horizon=horizon,
        key=k_model,
    )
    t0 = time.perf_counter()
    clf, _ = train(
        clf,
        train_data,
        steps=train_steps,
        batch_size=128,
        key=k_train,
        optimizer=optax.adam(3e-3),
        progress=progress,
    )
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    field = clf.body.field

    def with_body(body):
        return eqx.tree_at(lambda c: c.body, clf, body)

    # One compiled evaluation for every depth: the same Euler steps with `N` traced.
    family = EulerFamily(field, horizon)
    accuracies = [
        evaluate(with_body(family.traced_depth(n)), test_data)["accuracy"]
        for n in steps
    ]
    ode_accuracy = evaluate(with_body(NeuralODE(field, horizon)), test_data)["accuracy"]
    states = jax.vmap(clf.features)(test_data[0][:num_states])
    sweep = depth_sweep(
        field, states, horizon=horizon, steps=steps, batched=True, key=k_sweep,
        progress=progress,
    )
    sweep = sweep.with_column("euler", "accuracy", accuracies).with_reference(
        accuracy=ode_accuracy
    )
    sweep = dataclasses.replace(
        sweep,
        meta={
            **sweep.meta,
            "trained_at_depth": train_depth,
            "train_steps": train_steps,
            "dim": dim,
            "width": width,
            "seed": seed,
            "dataset": "digits (sklearn), 1347 train / 450 test",
        },
    )
    return LearnedSweep(clf, sweep, train_seconds, time.perf_counter() - t0)


def write_outputs(result: LearnedSweep, out_dir: str) -> dict[str, str]:
    """Save `sweep.json`, `sweep.png` and `sweep.md` under `out_dir`."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "json": os.path.join(out_dir, "sweep.json"),
        "png": os.path.join(out_dir, "sweep.png"),
        "markdown": os.path.join(out_dir, "sweep.md"),
    }
    result.sweep.to_json(paths["json"])
    fig = result.sweep.plot(paths["png"])
    import matplotlib.pyplot as plt

    plt.close(fig)
    with open(paths["markdown"], "w", encoding="utf-8") as f:
        f.write(result.sweep.to_markdown() + "\n")
    return paths
