"""The untied part of `contdepth sweep`: train untied `beta = 1` ResNets (smooth and
i.i.d. initialisations) with the tied model's data and encoder/readout, then sweep
their depth refinements against their own Neural ODEs.

Fixed weights interpolated linearly in depth always converge to the ODE of the
interpolated path, so the error-vs-ODE column converges for every initialisation; what
separates the networks that *are* discretised ODEs from those that are not is the
regularity of the trained weights in depth and the gap, at the trained depth, between
the net and that ODE (Sander, Ablin & Peyré 2022; Marion, Wu, Sander & Biau 2024).
"""

import math
from collections.abc import Mapping, Sequence
from typing import cast, Literal

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
import optax

from .._classifier import Classifier
from .._depth.regularity import depth_regularity, scaling_exponent
from .._depth.untied import untied_resnet
from .._train.evaluate import evaluate
from .._train.train import train
from .refined import refined
from .sweep import depth_sweep


UntiedInit = Literal["smooth", "iid", "interpolated"]
UNTIED_INITS: tuple[UntiedInit, ...] = ("smooth", "iid", "interpolated")
#: The per-`N` columns copied from an untied family's own sweep into the main table.
_COLUMNS = ("sigma_max", "sigma_min", "cond", "jac_rel_err", "out_rel_err")


def family_name(init: str) -> str:
    return f"untied {init}"


def check_inits(inits: Sequence[str]) -> tuple[UntiedInit, ...]:
    """`inits` must be distinct names from `UNTIED_INITS` (possibly none)."""
    inits = tuple(inits)
    for init in inits:
        if init not in UNTIED_INITS:
            raise ValueError(
                f"`untied` must hold initialisations from {UNTIED_INITS}, got {init!r}."
            )
    if len(set(inits)) != len(inits):
        raise ValueError(f"`untied` must not repeat an initialisation, got {inits}.")
    return cast(tuple[UntiedInit, ...], inits)  # each one checked above


def check_multiples(steps: Sequence[int], train_depth: int) -> None:
    bad = [n for n in steps if n % train_depth]
    if bad:
        raise ValueError(
            f"The untied rows refine the net trained at N = {train_depth} to depths "
            f"r * {train_depth}, got steps {bad} that are not multiples of "
            f"{train_depth}: choose steps such as {train_depth},{2 * train_depth},"
            f"{4 * train_depth}, or pass untied=() (CLI: --untied none)."
        )


def frozen_alpha(optimizer) -> optax.GradientTransformation:
    """`optimizer` on every parameter but the body's scale `alpha = 1/N`, kept fixed so
    that the trained net stays the Euler scheme of an ODE (`as_neural_ode`)."""

    def labels(params):
        train_all = jax.tree.map(lambda _: "train", params)
        return eqx.tree_at(lambda c: c.body.alpha, train_all, "freeze")

    return optax.multi_transform(
        {"train": optimizer, "freeze": optax.set_to_zero()}, labels
    )


def _regularity(net) -> dict[str, float]:
    reg = depth_regularity(net)
    return {"max_increment": float(reg.max_increment), "h1_norm": float(reg.h1_norm)}


def _order(steps, errors) -> float | None:
    """The fitted slope of log error on log N (`-1` for first order), when defined."""
    errors = np.asarray(errors, float)
    if len(steps) < 3 or not np.all(np.isfinite(errors) & (errors > 0)):
        return None
    return scaling_exponent(steps, errors).slope


def sweep_untied(
    template: Classifier,
    init: UntiedInit,
    *,
    width: int,
    train_depth: int,
    steps: tuple[int, ...],
    train_data,
    test_data,
    train_steps: int,
    num_states: int,
    optimizer: optax.GradientTransformation,
    keys: tuple,
    progress: bool,
) -> tuple[dict[str, np.ndarray], dict]:
    """Train `template` (a classifier) with an untied `beta = 1` body of `init`, then
    sweep its refinements against its Neural ODE.

    **Returns:** `(columns, summary)`: the per-`N` columns (`sigma_max`, `sigma_min`,
    `cond`, `jac_rel_err`, `out_rel_err` against the net's own ODE, `accuracy`) and the
    scalars for the record (regularity at initialisation and after training, the gap
    at the trained depth, the fitted order, the test accuracy at the trained depth,
    the ODE's spectrum and solver steps). The ODE's own accuracy is not evaluated (a
    costly compile): the refined nets approach it at `O(1/N)`, so the accuracy at the
    largest `N` stands for it.
    """
    k_body, k_train, k_sweep = keys
    readout = template.readout
    # `make_classifier`'s readout: `Linear(dim, num_classes)`.
    assert isinstance(readout, eqx.nn.Linear) and readout.in_features != "scalar"
    dim = readout.in_features
    body = untied_resnet(
        k_body, dim=dim, hidden=width, num_layers=train_depth, beta=1.0, init=init
    )
    clf = eqx.tree_at(lambda c: c.body, template, body)
    clf, _ = train(
        clf,
        train_data,
        steps=train_steps,
        batch_size=128,
        key=k_train,
        optimizer=optimizer,
        progress=progress,
    )
    net = clf.body
    family = refined(net)

    def with_body(body):
        return eqx.tree_at(lambda c: c.body, clf, body)

    accuracy = [
        evaluate(with_body(family.traced_depth(n)), test_data)["accuracy"]
        for n in steps
    ]
    states = jax.vmap(clf.features)(test_data[0][:num_states])
    name = family_name(init)
    result = depth_sweep(
        {name: family},
        states,
        steps=steps,
        batched=True,
        compare="all",
        key=k_sweep,
        progress=progress,
    )
    columns = {c: result.families[name][c] for c in _COLUMNS}
    columns["accuracy"] = np.asarray(accuracy)
    at_train = steps.index(train_depth) if train_depth in steps else None
    summary = {
        "init": init,
        "regularity_at_init": _regularity(body),
        "regularity_trained": _regularity(net),
        "gap_at_train_depth": None
        if at_train is None
        else float(columns["out_rel_err"][at_train]),
        "order": _order(steps, columns["out_rel_err"]),
        "accuracy_at_train_depth": None if at_train is None else accuracy[at_train],
        "ode": dict(result.reference),
    }
    return columns, summary


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else str(v)


def untied_markdown(sweep, summaries: Mapping[str, dict], train_depth: int) -> str:
    """The untied families' record, under the sweep's tables: per `N` their output
    error against their own ODE and test accuracy, then one line per family."""
    names = [family_name(s["init"]) for s in summaries.values()]
    headers = ["N"] + [
        f"{name} {label}"
        for name in names
        for label in ("‖y_N−y_ode‖/‖y_ode‖", "test acc")
    ]
    per_n = [
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
    ] + [
        "| "
        + " | ".join(
            [str(n)]
            + [
                _fmt(float(sweep.families[name][c][i]))
                for name in names
                for c in ("out_rel_err", "accuracy")
            ]
        )
        + " |"
        for i, n in enumerate(sweep.steps)
    ]
    lines = [
        f"Untied β = 1 ResNets x + (1/N) V_k tanh(W_k x), trained at N = {train_depth} "
        "with the same data and encoder/readout, refined to N = r·"
        f"{train_depth} by linear interpolation of the weights in depth; each family's "
        "‖J_N−J_ode‖ is against its own Neural ODE (the linearly interpolated "
        "weights, tight tolerances). Fixed weights interpolated linearly always "
        "converge to that ODE at O(1/N); whether the trained net *is* that ODE is told "
        f"by the gap at N = {train_depth} and by the weights' regularity in depth (a "
        "rough weight path also makes the ODE costly: see its adaptive solver steps).",
        "",
        *per_n,
        "",
        "| family | max‖θ_{k+1}−θ_k‖ init → trained | H¹ norm init → trained | "
        f"‖y−y_ode‖/‖y_ode‖ at N = {train_depth} | fitted order | "
        f"test acc N = {train_depth} → {sweep.steps[-1]} | ODE σ_max, σ_min | "
        "ODE solver steps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in zip(names, summaries.values()):
        r0, r1, ode = s["regularity_at_init"], s["regularity_trained"], s["ode"]
        lines.append(
            f"| {name} | {_fmt(r0['max_increment'])} → "
            f"{_fmt(r1['max_increment'])} | {_fmt(r0['h1_norm'])} → "
            f"{_fmt(r1['h1_norm'])} | {_fmt(s['gap_at_train_depth'])} | "
            f"{_fmt(s['order'])} | {_fmt(s['accuracy_at_train_depth'])} → "
            f"{_fmt(float(sweep.families[name]['accuracy'][-1]))} | "
            f"{_fmt(ode['sigma_max'])}, "
            f"{_fmt(ode['sigma_min'])} | {_fmt(ode.get('num_steps'))} |"
        )
    return "\n".join(lines)


def untied_keys(k_model, k_train, k_sweep) -> tuple:
    """The keys of the untied runs: their own body key; the tied run's batch order and
    Jacobian probes."""
    return jr.fold_in(k_model, 1), k_train, k_sweep
