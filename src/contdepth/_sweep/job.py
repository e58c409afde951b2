"""The main job: train a small Euler ResNet on digits, then re-run the *same learned
field* at every depth `N` and as a Neural ODE (`contdepth sweep`); optionally the same
for trained untied ResNets refined in depth (`untied_job`)."""

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence

import equinox as eqx
import jax
import jax.random as jr
import optax

from .. import datasets
from .._models.euler import EulerResNet
from .._models.neural_ode import NeuralODE
from .._optional import require
from .._train.evaluate import evaluate
from .._train.train import train
from .._validation import check_positive_float, check_positive_int
from .._zoo import make_classifier
from .families import EulerFamily
from .result import DepthSweep
from .sweep import check_steps, depth_sweep
from .untied_job import (
    check_inits,
    check_multiples,
    family_name,
    frozen_alpha,
    sweep_untied,
    untied_keys,
    untied_markdown,
)


DEFAULT_JOB_STEPS = (8, 16, 32, 64, 128, 256, 512, 1024)


@dataclasses.dataclass(frozen=True)
class LearnedSweep:
    """What `contdepth sweep` produces: the trained classifier, its depth sweep (with
    test accuracy per `N`), timings, and the untied runs' summaries (also in
    `sweep.meta["untied"]`)."""

    classifier: eqx.Module
    sweep: DepthSweep
    train_seconds: float
    sweep_seconds: float
    untied: Mapping[str, dict] = dataclasses.field(default_factory=dict)
    untied_seconds: float = 0.0

    def to_markdown(self) -> str:
        """The sweep's tables, then the untied families' record (if any)."""
        text = self.sweep.to_markdown()
        if not self.untied:
            return text
        depth = self.sweep.meta["trained_at_depth"]
        return text + "\n\n" + untied_markdown(self.sweep, self.untied, depth)


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
    untied: Sequence[str] = (),
    progress: bool = True,
) -> LearnedSweep:
    """Train `Linear -> EulerResNet(F, train_depth, horizon) -> Linear` on digits, then
    evaluate the learned `F` at every depth in `steps` (test accuracy and the spectrum
    of `dy_N/dy_0` at `num_states` encoded test images) and as a `NeuralODE`, with the
    untrained baselines of [`contdepth.depth_sweep`][].

    With `untied` initialisations (`"smooth"`, `"iid"`, `"interpolated"` of
    [`contdepth.untied_resnet`][]), also train, per initialisation, the same classifier
    with an untied `beta = 1` body `x + (1/N) V_k tanh(W_k x)` (hidden size `width`,
    depth `train_depth`, the scale `1/N` kept fixed), and sweep its depth refinements
    [`contdepth.refine_depth`][] (`steps` must then be multiples of `train_depth`)
    against its own Neural ODE [`contdepth.as_neural_ode`][] (Sander, Ablin & Peyré
    2022): families `"untied <init>"`, with the weights'
    [`contdepth.depth_regularity`][] in `meta["untied"]`.

    **Returns:** a `LearnedSweep` whose `.sweep` has an `"accuracy"` column for the
    Euler family (and the untied ones) and `reference["accuracy"]` for the Neural ODE.
    """
    dim = check_positive_int("dim", dim)
    width = check_positive_int("width", width)
    horizon = check_positive_float("horizon", horizon)
    train_depth = check_positive_int("train_depth", train_depth)
    steps = check_steps(steps)
    train_steps = check_positive_int("train_steps", train_steps)
    num_states = check_positive_int("num_states", num_states)
    untied = check_inits(untied)
    if untied:
        check_multiples(steps, train_depth)
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
    assert isinstance(clf.body, EulerResNet)  # `make_classifier("euler", ...)`
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
        field,
        states,
        horizon=horizon,
        steps=steps,
        batched=True,
        key=k_sweep,
        progress=progress,
    )
    sweep = sweep.with_column("euler", "accuracy", accuracies).with_reference(
        accuracy=ode_accuracy
    )
    # The untied bodies reuse the tied run's data, batch order, encoder/readout
    # initialisation and probes; one optimiser object, so that every init after the
    # first reuses the compiled training step.
    optimizer = frozen_alpha(optax.adam(3e-3))
    summaries = {}
    train_untied_seconds = 0.0
    for init in untied:
        t1 = time.perf_counter()
        columns, summaries[init] = sweep_untied(
            clf,  # its body is replaced by the untied one
            init,
            width=width,
            train_depth=train_depth,
            steps=steps,
            train_data=train_data,
            test_data=test_data,
            train_steps=train_steps,
            num_states=num_states,
            optimizer=optimizer,
            keys=untied_keys(k_model, k_train, k_sweep),
            progress=progress,
        )
        train_untied_seconds += time.perf_counter() - t1
        for column, values in columns.items():
            sweep = sweep.with_column(family_name(init), column, values)
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
            **({"untied": summaries} if summaries else {}),
        },
    )
    sweep_seconds = time.perf_counter() - t0 - train_untied_seconds
    return LearnedSweep(
        clf, sweep, train_seconds, sweep_seconds, summaries, train_untied_seconds
    )


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
    plt = require("matplotlib.pyplot", extra="plot")

    plt.close(fig)
    with open(paths["markdown"], "w", encoding="utf-8") as f:
        f.write(result.to_markdown() + "\n")
    return paths
