"""Is the trained ResNet an ODE? (Sander, Ablin & Peyré 2022, "Do Residual Neural
Networks discretize Neural Ordinary Differential Equations?", NeurIPS.)

A digits classifier `readout(body(encoder(x)))` is trained with the body the untied
ResNet `x_{k+1} = x_k + V_k tanh(W_k x_k) / N` of [`contdepth.untied_resnet`][]
(`beta = 1`), for several depths `N`, from the smooth initialisation (`V_k = 0`, one
`W` for every layer; Marion et al. 2024) and from an i.i.d. one. The trained body is
then asked whether it is the Euler scheme of an ODE:

- the regularity of its weights in depth ([`contdepth.depth_regularity`][]);
- its distance to the same weights refined to depth `4N` by linear interpolation
    ([`contdepth.refine_depth`][]) and to the Neural ODE of the interpolated weights
    solved by a tight `Dopri5` ([`contdepth.as_neural_ode`][]), on the test set's
    encoded features, relative to the body's displacement `||y_N(z) - z||`;
- the relative error of the memory-free backward's gradient
    ([`contdepth.MemoryFree`][]; activations rebuilt backwards) against exact
    backpropagation, for the full parameter gradient of the test loss.

Each quantity gets a log-log slope against `N` ([`contdepth.scaling_exponent`][]).
Every `(init, N, seed)` is trained in one compiled program: nets of depth `N` are
padded to `max(depths)` layers with zero layers (`V_k = W_k = 0`: the identity, with
zero gradients and an exact backward reconstruction), and keep `alpha = 1/N`.
"""

import argparse
import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import PRNGKeyArray

from .. import datasets
from .._argtypes import int_list
from .._depth.memory_free import MemoryFree
from .._depth.refine import refine_depth
from .._depth.regularity import depth_regularity, scaling_exponent, ScalingFit
from .._depth.untied import as_neural_ode, ResidualBranch, stacked_resnet
from .._optional import require
from .._outputs import write_figure_and_record
from .._validation import check_key, check_positive_float, check_positive_int
from .smooth_stays_smooth import fit_record


INITS = ("smooth", "iid")
DEPTHS = (8, 16, 32, 64, 128)
DIM, HIDDEN = 16, 32
REFINE_FACTOR = 4
RECONSTRUCTIONS = ("euler", "corrected")
# Quantities fitted against N, in the order of the table and the plot.
FITTED = (
    "max_increment",
    "h1_norm",
    "refine_gap",
    "ode_gap",
    "mf_error_euler",
    "mf_error_corrected",
)

PAPER_SETTING = {
    "reference": "Sander, Ablin & Peyré 2022, 'Do Residual Neural Networks discretize "
    "Neural Ordinary Differential Equations?', NeurIPS (arXiv:2205.14612)",
    "model": "x_{k+1} = x_k + (1/N) f_{theta_k}(x_k); theory for linear residual "
    "functions, experiments on image ResNets",
    "claims": [
        "||ResNet - Neural ODE of its weights|| does not go to 0 with N if the "
        "residual functions are not smooth in depth; O(1/N) if they are",
        "gradient descent from a smooth initialisation keeps the weights smooth "
        "(linear residuals, small initial loss): implicit regularisation towards a "
        "limit Neural ODE at rate 1/N",
        "memory-free backward (activations recovered by a reverse Euler step) has "
        "gradient error O(1/N) if the residual functions are Lipschitz in the input",
        "Heun's method improves the recovered gradient (O(1/N^2)) when the weights "
        "are smooth in depth",
        "the adjoint method trains / fine-tunes very deep ResNets without storing "
        "activations",
    ],
    "data": "image classification (CIFAR, ImageNet fine-tuning)",
    "source_note": "claims from the NeurIPS abstract as stored in the search corpus; "
    "the exact architectures, initialisations and optimiser settings of their "
    "figures could not be read there, so ours are chosen and stated in `ours`. "
    "Our 'corrected' reconstruction (one fixed-point sweep of the exact inverse "
    "step) stands in for their Heun reconstruction.",
}


# ----------------------------------------------------------------------- the models


@eqx.filter_jit
def _initial_models(seed_keys, depths, dim, hidden, num_features, num_classes):
    """Classifiers indexed `[init, depth, seed]` (array leaves with those three leading
    axes), drawn in one program.

    Seed `s` draws, from `seed_keys[s]`, the encoder `Linear(num_features, dim)` and
    readout `Linear(dim, num_classes)` weights `~ N(0, 1/fan_in)` (zero biases) and,
    per init, one body of `max(depths)` layers with the law of
    `contdepth.untied_resnet(..., init=init)` (`W ~ N(0, 1/dim)`,
    `V ~ N(0, 1/hidden)` entrywise; smooth: `V = 0` and one `W` for all layers), all
    shared by every depth: depth `N` keeps the first `N` layers (zero layers beyond)
    and `alpha = 1/N`. All numbers come from one `jax.random.normal` call per seed (a
    random-number program is slow to compile on CPU: one instead of seven)."""
    pad = max(depths)
    keep = (jnp.arange(pad)[None, :] < jnp.asarray(depths)[:, None])[:, :, None, None]
    shapes = {
        "enc": (dim, num_features),
        "read": (num_classes, dim),
        "W0": (hidden, dim),
        "W": (pad, hidden, dim),
        "V": (pad, dim, hidden),
    }
    fan_in = {"enc": num_features, "read": dim, "W0": dim, "W": dim, "V": hidden}
    sizes = [int(np.prod(v)) for v in shapes.values()]

    def one_seed(key):
        flat = jr.normal(key, (sum(sizes),))
        parts = jnp.split(flat, np.cumsum(sizes)[:-1])
        w = {
            name: part.reshape(shape) / np.sqrt(fan_in[name])
            for (name, shape), part in zip(shapes.items(), parts)
        }
        bodies = {
            "smooth": (jnp.broadcast_to(w["W0"], w["W"].shape), jnp.zeros_like(w["V"])),
            "iid": (w["W"], w["V"]),
        }
        W = jnp.stack([jnp.where(keep, bodies[i][0][None], 0.0) for i in INITS])
        V = jnp.stack([jnp.where(keep, bodies[i][1][None], 0.0) for i in INITS])
        alpha = jnp.broadcast_to(1.0 / jnp.asarray(depths, W.dtype), W.shape[:2])
        body = eqx.filter_vmap(
            eqx.filter_vmap(
                lambda W, V, a: stacked_resnet(
                    ResidualBranch(W, V, stacked=True), pad, a
                )
            )
        )(W, V, alpha)

        def linear(weight):
            out, inp = weight.shape
            layer = eqx.nn.Linear(inp, out, key=jr.PRNGKey(0))
            weight = jnp.broadcast_to(weight, (*W.shape[:2], *weight.shape))
            bias = jnp.zeros((*W.shape[:2], out), weight.dtype)
            return eqx.tree_at(lambda m: (m.weight, m.bias), layer, (weight, bias))

        return _Model(linear(w["enc"]), body, linear(w["read"]))

    # [seed, init, depth, ...] -> [init, depth, seed, ...]
    models = eqx.filter_vmap(one_seed)(seed_keys)
    dyn, static = eqx.partition(models, eqx.is_array)
    return eqx.combine(jax.tree.map(lambda a: jnp.moveaxis(a, 0, 2), dyn), static)


class _Model(eqx.Module):
    """`readout(body(encoder(x)))` for one sample: a [`contdepth.Classifier`][] minus
    its construction-time checks, which would run on every (vmapped) construction and
    call of the stacked models here."""

    encoder: eqx.nn.Linear
    body: Any
    readout: eqx.nn.Linear

    def __call__(self, x):
        return self.readout(self.body(self.encoder(x)))


def _stack(nested):
    """Nested lists of modules of one structure as one module, one axis per level."""
    if isinstance(nested, list):
        parts = [_stack(n) for n in nested]
        dyn = [eqx.filter(p, eqx.is_array) for p in parts]
        static = eqx.filter(parts[0], eqx.is_array, inverse=True)
        return eqx.combine(jax.tree.map(lambda *a: jnp.stack(a), *dyn), static)
    return nested


def _vmap3(fn):
    """`fn(model, ...)` mapped over the `[init, depth, seed]` axes of the model."""
    for _ in range(3):
        fn = eqx.filter_vmap(fn, in_axes=(eqx.if_array(0), None))
    return fn


# ------------------------------------------------------------------------- training


def _cross_entropy(model, x, y):
    logits = jax.vmap(model)(x)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def _freeze_alpha(grads):
    # alpha = 1/N is the depth scaling, not a parameter.
    return eqx.tree_at(lambda g: g.body.alpha, grads, jnp.zeros_like(grads.body.alpha))


def _with_body(model, reconstruction):
    if reconstruction is None:
        return model
    return eqx.tree_at(
        lambda m: m.body, model, MemoryFree(model.body, reconstruction=reconstruction)
    )


@eqx.filter_jit
def _train(models, x, y, batches, *, lr, reconstruction):
    """Adam on minibatches `batches` `(steps, batch)` of indices, every model of the
    stack in one program; gradients by exact backprop (`reconstruction=None`) or the
    memory-free backward."""
    optimiser = optax.adam(lr)

    def one(model, _):
        params, static = eqx.partition(model, eqx.is_inexact_array)

        def loss(p, idx):
            m = _with_body(eqx.combine(p, static), reconstruction)
            return _cross_entropy(m, x[idx], y[idx])

        def step(carry, idx):
            p, state = carry
            grads = jax.grad(loss)(p, idx)
            grads = _freeze_alpha(grads)
            updates, state = optimiser.update(grads, state, p)
            return (eqx.apply_updates(p, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, optimiser.init(params)), batches)
        return eqx.combine(params, static)

    return _vmap3(one)(models, None)


# ---------------------------------------------------------------------- measurements


@eqx.filter_jit
def _outputs(models, x):
    """Encoded features `z`, body outputs and logits of every model on `x`."""

    def one(model, x):
        z = jax.vmap(model.encoder)(x)
        out = jax.vmap(model.body)(z)
        return z, out, jax.vmap(model.readout)(out)

    return _vmap3(one)(models, x)


@eqx.filter_jit
def _gradient_errors(models, x, y):
    """Relative error `||g_mf - g|| / ||g||` of the memory-free gradient of the loss on
    `(x, y)` (all parameters but `alpha`), per reconstruction."""

    def one(model, data):
        def flat_grad(reconstruction):
            g = eqx.filter_grad(
                lambda m: _cross_entropy(_with_body(m, reconstruction), *data)
            )
            grads = _freeze_alpha(g(model))
            return ravel_pytree(eqx.filter(grads, eqx.is_inexact_array))[0]

        exact = flat_grad(None)
        norm = jnp.linalg.norm(exact)
        return jnp.stack(
            [jnp.linalg.norm(flat_grad(r) - exact) / norm for r in RECONSTRUCTIONS]
        )

    return _vmap3(one)(models, (x, y))


def _slice_depth(models, j, depth):
    """The models of depth index `j` alone, `[init, 1, seed]`, unpadded to `depth`
    layers."""
    dyn, static = eqx.partition(models, eqx.is_array)
    models = eqx.combine(jax.tree.map(lambda a: a[:, j : j + 1], dyn), static)
    W, V = (a[..., :depth, :, :] for a in (models.body.fields.W, models.body.fields.V))
    return eqx.tree_at(lambda m: m.body, models, _bodies(W, V, models.body.alpha))


def _bodies(W, V, alpha):
    """Untied nets from weights `W` `(..., L, hidden, dim)`, `V` `(..., L, dim,
    hidden)` and scales `alpha` `(...)`, with those leading axes, `... = [init, depth,
    seed]`."""
    depth = W.shape[-3]
    make = lambda W, V, a: stacked_resnet(  # noqa: E731
        ResidualBranch(W, V, stacked=True), depth, a
    )
    for _ in range(alpha.ndim):
        make = eqx.filter_vmap(make)
    return make(jnp.asarray(W), jnp.asarray(V), jnp.asarray(alpha))


@eqx.filter_jit
def _ode_outputs(odes, z):
    return eqx.filter_vmap(lambda m, z: jax.vmap(m)(z), in_axes=(eqx.if_array(0), 0))(
        odes, z
    )


def _ode_groups(depths, num_seeds):
    """Cells `(init, depth index, seed)` grouped by the number of layers `M` whose
    Neural ODE is solved for them. The ODE of a depth-`N` net's linearly interpolated
    weights is that of the net linearly refined to any depth `M = rN`: the refined
    weights are samples of the same piecewise-linear `theta(t)` (constant after
    `(N-1)/N`) on a finer grid containing the old one. So when every depth divides
    `max(depths)`, all cells share `M = max(depths)` and one compiled solve."""
    M = max(depths)
    groups = {}
    for j, N in enumerate(depths):
        nodes = M if M % N == 0 else N
        groups.setdefault(nodes, []).extend(
            (i, j, s) for i in range(len(INITS)) for s in range(num_seeds)
        )
    return groups


def _gap(reference, other, z):
    """Per model, `(mean_i ||a_i - b_i|| / mean_i ||a_i - z_i||, max_i ||a_i - b_i|| /
    ||a_i - z_i||)` over samples `i` (last-but-one axis)."""
    diff = np.linalg.norm(np.asarray(reference) - np.asarray(other), axis=-1)
    moved = np.linalg.norm(np.asarray(reference) - np.asarray(z), axis=-1)
    return diff.mean(-1) / moved.mean(-1), (diff / moved).max(-1)


def _accuracy(logits, y):
    return (np.argmax(np.asarray(logits), -1) == np.asarray(y)).mean(-1)


# ---------------------------------------------------------------------------- driver


@dataclasses.dataclass(frozen=True)
class ResNetOrODEResult:
    """What [`run_resnet_or_ode`][contdepth.experiments.run_resnet_or_ode] returns.
    `measures[name]` are arrays indexed `[init, depth, seed]`,
    `inits = ("smooth", "iid")`:

    - `accuracy`: test accuracy of the trained classifier (exact backprop).
    - `max_increment`, `h1_norm`: [`contdepth.depth_regularity`][] of the trained body.
    - `refine_gap`: `mean_i ||y_N(z_i) - y_{4N}(z_i)|| / mean_i ||y_N(z_i) - z_i||`
        over the encoded test set `z_i`, `y_{4N}` the linearly refined body
        ([`contdepth.refine_depth`][]); `refine_gap_max`: the worst sample's ratio.
    - `refined_accuracy`: test accuracy with the refined body.
    - `ode_gap`, `ode_gap_max`, `ode_accuracy`: the same for the Neural ODE of the
        linearly interpolated weights ([`contdepth.as_neural_ode`][], `Dopri5`), on
        the first `ode_samples` test samples only; `ode_samples_accuracy`: the
        trained net's accuracy on those samples.
    - `mf_error_euler`, `mf_error_corrected`: relative error of the memory-free
        gradient ([`contdepth.MemoryFree`][]) against exact backprop.

    `memory_free_training` (or `None`): `{"depth": N, "accuracy": [init, seed] test
    accuracy when trained with the memory-free (euler) gradient instead of exact
    backprop, "exact_accuracy": the same with exact backprop}`.

    `fits[name][init]` is the [`contdepth.ScalingFit`][] of the geometric mean over
    seeds against `N`; `seed_slopes[name][init]` the slope of each seed alone.
    `settings` holds every setting of the run; `seconds` its wall time, and
    `stage_seconds` that of each stage.
    """

    depths: tuple[int, ...]
    inits: tuple[str, ...]
    measures: dict[str, np.ndarray]
    memory_free_training: dict[str, Any] | None
    fits: dict[str, dict[str, ScalingFit]]
    seed_slopes: dict[str, dict[str, np.ndarray]]
    settings: dict[str, Any]
    seconds: float
    stage_seconds: dict[str, float]


def run_resnet_or_ode(
    depths: Sequence[int] = DEPTHS,
    *,
    key: PRNGKeyArray,
    num_seeds: int = 1,
    steps: int = 300,
    batch_size: int = 128,
    lr: float = 1e-2,
    dim: int = DIM,
    hidden: int = HIDDEN,
    grad_batch: int = 256,
    ode_samples: int = 128,
    ode_tol: float | None = None,
    memory_free_training: bool = True,
    memory_free_depth: int | None = None,
    data=None,
) -> ResNetOrODEResult:
    """Train digits classifiers with an untied `beta = 1` ResNet body at every depth
    and initialisation, and measure how close each trained body is to an ODE
    (Sander, Ablin & Peyré 2022). See the module docstring for the measures.

    **Arguments:**

    - `depths`: at least 3 distinct depths `N >= 2`.
    - `key`: a `jax.random.PRNGKey`; seed `s` uses `jax.random.split(key,
        num_seeds + 1)[s]` for the encoder, body and readout (shared by every depth
        and init) and the last key for the minibatch order (shared by all).
    - `num_seeds`: independent initialisations.
    - `steps`, `batch_size`, `lr`: Adam steps, minibatch size and learning rate.
    - `dim`, `hidden`: the body's state and hidden sizes.
    - `grad_batch`: test samples in the loss whose gradient is compared.
    - `ode_samples`: the first test samples pushed through the Neural ODE.
    - `ode_tol`: `rtol = atol` of the `Dopri5` solve; default `1e-9` in float64,
        `1e-6` in float32.
    - `memory_free_training`: also train the nets of depth `memory_free_depth`
        (default `max(depths)`; one of `depths`) with the memory-free (euler) gradient,
        from the same initialisation and batches, and report their test accuracy.
    - `data`: `((x_train, y_train), (x_test, y_test))`; default `cd.datasets.digits()`.

    **Returns:**

    A [`ResNetOrODEResult`][contdepth.experiments.ResNetOrODEResult].
    """
    check_key("key", key)
    depths = tuple(check_positive_int("depths[i]", N) for N in depths)
    if len(depths) < 3 or min(depths) < 2 or len(set(depths)) != len(depths):
        raise ValueError(
            f"`depths` must hold at least 3 distinct depths >= 2 (a slope with a "
            f"standard error; refine_depth infers beta from alpha = N^-1), got "
            f"{depths}."
        )
    num_seeds = check_positive_int("num_seeds", num_seeds)
    steps = check_positive_int("steps", steps)
    batch_size = check_positive_int("batch_size", batch_size)
    lr = check_positive_float("lr", lr)
    dim = check_positive_int("dim", dim)
    hidden = check_positive_int("hidden", hidden)
    grad_batch = check_positive_int("grad_batch", grad_batch)
    ode_samples = check_positive_int("ode_samples", ode_samples)
    mf_depth = max(depths) if memory_free_depth is None else memory_free_depth
    if memory_free_training and mf_depth not in depths:
        raise ValueError(
            f"`memory_free_depth` must be one of `depths` {depths}, "
            f"got {memory_free_depth!r}."
        )
    x64 = jnp.result_type(float) == jnp.float64
    if ode_tol is None:
        ode_tol = 1e-9 if x64 else 1e-6
    ode_tol = check_positive_float("ode_tol", ode_tol)

    start = time.perf_counter()
    stages = {}

    def lap(name):
        stages[name] = time.perf_counter() - start - sum(stages.values())

    (x_tr, y_tr), (x_te, y_te) = datasets.digits() if data is None else data
    dtype = jnp.result_type(float)
    x_tr, x_te = jnp.asarray(x_tr, dtype), jnp.asarray(x_te, dtype)
    y_tr, y_te = jnp.asarray(y_tr), jnp.asarray(y_te)
    if batch_size > x_tr.shape[0]:
        raise ValueError(
            f"`batch_size` must be at most the {x_tr.shape[0]} training "
            f"samples, got {batch_size}."
        )
    num_classes = int(max(int(y_tr.max()), int(y_te.max())) + 1)
    keys = jr.split(key, num_seeds + 1)
    models = _initial_models(
        keys[:num_seeds], depths, dim, hidden, x_tr.shape[1], num_classes
    )
    lap("draw")
    # Minibatches drawn with replacement: one cheap random-number program.
    batches = jr.randint(keys[-1], (steps, batch_size), 0, x_tr.shape[0])

    trained = _train(models, x_tr, y_tr, batches, lr=lr, reconstruction=None)
    jax.block_until_ready(trained)
    lap("train")
    measures = {}
    z, out, logits = _outputs(trained, x_te)
    measures["accuracy"] = _accuracy(logits, y_te)
    lap("evaluate")

    shape = (len(INITS), len(depths), num_seeds)
    regularity = np.zeros((2, *shape))
    pad = REFINE_FACTOR * max(depths)
    nets = {}
    W, V = np.asarray(trained.body.fields.W), np.asarray(trained.body.fields.V)
    # The refined nets, padded with zero layers to one depth (one program for all).
    W_ref = np.zeros((*shape, pad, *W.shape[-2:]), W.dtype)
    V_ref = np.zeros((*shape, pad, *V.shape[-2:]), V.dtype)
    alpha_ref = np.zeros(shape, W.dtype)
    for c in np.ndindex(*shape):
        N = depths[c[1]]
        net = _bodies(W[c][:N], V[c][:N], np.asarray(1.0 / N, W.dtype))
        nets[c] = net
        reg = depth_regularity(net)
        regularity[(slice(None), *c)] = reg.max_increment, reg.h1_norm
        ref = refine_depth(net, REFINE_FACTOR)
        assert isinstance(ref.fields, ResidualBranch)  # refined from `_bodies`' nets
        W_ref[c][: ref.num_layers] = np.asarray(ref.fields.W)
        V_ref[c][: ref.num_layers] = np.asarray(ref.fields.V)
        alpha_ref[c] = ref.alpha
    measures["max_increment"], measures["h1_norm"] = regularity
    refined_models = eqx.tree_at(
        lambda m: m.body, trained, _bodies(W_ref, V_ref, alpha_ref)
    )
    _, out_ref, logits_ref = _outputs(refined_models, x_te)
    measures["refine_gap"], measures["refine_gap_max"] = _gap(out, out_ref, z)
    measures["refined_accuracy"] = _accuracy(logits_ref, y_te)
    lap("refine")

    n_ode = min(ode_samples, x_te.shape[0])
    ode_out = np.zeros((*shape, n_ode, dim))
    solver: dict[str, Any] = dict(
        solver=diffrax.Dopri5(), rtol=ode_tol, atol=ode_tol, max_steps=1_000_000
    )
    for nodes, cells in _ode_groups(depths, num_seeds).items():
        # One compiled solve per group: see `_ode_groups`.
        odes = _stack(
            [
                as_neural_ode(refine_depth(nets[c], nodes // depths[c[1]]), **solver)
                for c in cells
            ]
        )
        zs = jnp.stack([z[c][:n_ode] for c in cells])
        for c, ys in zip(cells, np.asarray(_ode_outputs(odes, zs))):
            ode_out[c] = ys
    z_ode, out_ode = np.asarray(z)[..., :n_ode, :], np.asarray(out)[..., :n_ode, :]
    measures["ode_gap"], measures["ode_gap_max"] = _gap(out_ode, ode_out, z_ode)
    readout = trained.readout
    ode_logits = np.einsum("ijsnd,ijscd->ijsnc", ode_out, np.asarray(readout.weight))
    ode_logits = ode_logits + np.asarray(readout.bias)[..., None, :]
    measures["ode_accuracy"] = _accuracy(ode_logits, y_te[:n_ode])
    # The trained net on the same samples, for comparison.
    measures["ode_samples_accuracy"] = _accuracy(
        np.asarray(logits)[..., :n_ode, :], y_te[:n_ode]
    )
    lap("neural_ode")

    g = min(grad_batch, x_te.shape[0])
    errors = np.asarray(_gradient_errors(trained, x_te[:g], y_te[:g]))
    for r, name in enumerate(RECONSTRUCTIONS):
        measures[f"mf_error_{name}"] = errors[..., r]
    lap("memory_free_gradient")

    mf_training = None
    if memory_free_training:
        j = depths.index(mf_depth)
        mf_trained = _train(
            _slice_depth(models, j, mf_depth),
            x_tr,
            y_tr,
            batches,
            lr=lr,
            reconstruction="euler",
        )
        mf_training = {
            "depth": mf_depth,
            "reconstruction": "euler",
            "accuracy": _accuracy(_outputs(mf_trained, x_te)[2], y_te)[:, 0],
            "exact_accuracy": measures["accuracy"][:, j],
        }
        lap("memory_free_training")
    seconds = time.perf_counter() - start

    fits, seed_slopes = {}, {}
    for name in FITTED:
        values = measures[name]
        fits[name], seed_slopes[name] = {}, {}
        for i, init in enumerate(INITS):
            fits[name][init] = scaling_exponent(
                depths, np.exp(np.mean(np.log(values[i]), axis=1))
            )
            seed_slopes[name][init] = np.array(
                [
                    scaling_exponent(depths, values[i, :, s]).slope
                    for s in range(num_seeds)
                ]
            )
    settings = dict(
        depths=list(depths),
        num_seeds=num_seeds,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        optimiser="Adam (alpha = 1/N frozen)",
        dim=dim,
        hidden=hidden,
        activation="tanh",
        data="digits (scikit-learn 8x8, 1347 train / 450 test)"
        if data is None
        else "user-supplied",
        model="Linear(64, dim) -> x_{k+1} = x_k + V_k tanh(W_k x_k) / N -> "
        "Linear(dim, 10)",
        encoder_readout="weights ~ N(0, 1/fan_in), zero biases",
        inits={
            "smooth": "V_k = 0, W_k = W ~ N(0, 1/dim) for every k",
            "iid": "W_k ~ N(0, 1/dim), V_k ~ N(0, 1/hidden) independently per k",
        },
        refine=f"refine_depth(net, {REFINE_FACTOR}, interpolation='linear')",
        neural_ode=f"as_neural_ode(net, interpolation='linear', solver=Dopri5, "
        f"rtol=atol={ode_tol:g}) on the first {n_ode} test samples",
        gap="mean_i ||a(z_i) - b(z_i)|| / mean_i ||a(z_i) - z_i|| over encoded test "
        "samples z_i, a the trained body",
        memory_free_gradient=f"full parameter gradient (alpha excluded) of the mean "
        f"cross-entropy on the first {g} test samples, relative 2-norm error",
        memory_free_training=f"depth {mf_depth}, euler reconstruction, same "
        "initialisation, steps and batches"
        if memory_free_training
        else None,
        padding="every depth padded to max(depths) zero layers, alpha = 1/N",
        dtype=str(dtype),
    )
    return ResNetOrODEResult(
        depths=depths,
        inits=INITS,
        measures=measures,
        memory_free_training=mf_training,
        fits=fits,
        seed_slopes=seed_slopes,
        settings=settings,
        seconds=seconds,
        stage_seconds=stages,
    )


# -------------------------------------------------------------------------- plotting


PANELS = (
    ("test accuracy", ("accuracy", "refined_accuracy"), False),
    (
        "accuracy on the Neural ODE's samples",
        ("ode_samples_accuracy", "ode_accuracy"),
        False,
    ),
    ("weight regularity in depth", ("max_increment", "h1_norm"), True),
    ("trained body vs its ODE limit (relative)", ("refine_gap", "ode_gap"), True),
    (
        "memory-free gradient, relative error",
        ("mf_error_euler", "mf_error_corrected"),
        True,
    ),
)
LABELS = {
    "accuracy": "trained",
    "refined_accuracy": "refined x4",
    "ode_accuracy": "Neural ODE",
    "ode_samples_accuracy": "trained",
    "max_increment": "max_k ||theta_{k+1} - theta_k||",
    "h1_norm": "H^1 norm",
    "refine_gap": "vs refined x4",
    "ode_gap": "vs Neural ODE",
    "mf_error_euler": "euler",
    "mf_error_corrected": "corrected",
}


def plot_resnet_or_ode(
    result: ResNetOrODEResult, path: str | os.PathLike | None = None
):
    """Five panels against depth `N` (log-log where the quantity is fitted): test
    accuracies (trained, refined, memory-free-trained), accuracies on the Neural
    ODE's samples, weight regularity, distances to the refined net and to the Neural
    ODE, and the memory-free gradient error; smooth init solid, i.i.d. dashed, the
    geometric mean over seeds (fitted) or the mean (accuracies), with the fitted slope
    in the legend.

    **Arguments:**

    - `result`: a [`ResNetOrODEResult`][contdepth.experiments.ResNetOrODEResult].
    - `path`: where to save the figure (PNG); `None` saves nothing.

    **Returns:**

    The `matplotlib` figure.
    """
    plt = require("matplotlib.pyplot", extra="plot")
    depths = np.asarray(result.depths, dtype=float)
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    axes.flat[-1].axis("off")
    for ax, (title, names, loglog) in zip(axes.flat, PANELS):
        for c, name in enumerate(n for n in names if n in result.measures):
            for i, (init, style) in enumerate(zip(result.inits, ("-o", "--s"))):
                values = result.measures[name][i]
                mean = np.exp(np.log(values).mean(-1)) if loglog else values.mean(-1)
                label = f"{LABELS[name]}, {init}"
                if loglog:
                    fit = result.fits[name][init]
                    label += f" ({fit.slope:.2f} ± {fit.slope_stderr:.2f})"
                ax.plot(depths, mean, style, color=f"C{c}", label=label, ms=4)
        if names[0] == "accuracy" and result.memory_free_training is not None:
            mf = result.memory_free_training
            for i, (init, marker) in enumerate(zip(result.inits, ("*", "P"))):
                ax.plot(
                    [mf["depth"]],
                    [np.mean(mf["accuracy"][i])],
                    marker,
                    color="C3",
                    ms=10,
                    label=f"trained memory-free ({mf['reconstruction']}), {init}",
                )
        ax.set(
            xscale="log",
            yscale="log" if loglog else "linear",
            xlabel="depth N",
            title=title,
        )
        ax.legend(fontsize=7)
    fig.suptitle("Is the trained ResNet an ODE? (Sander, Ablin & Peyré 2022)")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


# ------------------------------------------------------------------------------- CLI


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `resnet-or-ode` subcommand to an `argparse` subparsers object."""
    parser = subparsers.add_parser(
        "resnet-or-ode",
        help="train untied beta=1 ResNet classifiers on digits over depth N and test "
        "whether they discretise an ODE (Sander et al. 2022)",
        description=(
            "Sander, Ablin & Peyré 2022 (NeurIPS): train digits classifiers whose\n"
            "body is x_{k+1} = x_k + V_k tanh(W_k x_k) / N, from the smooth\n"
            "(V=0, tied W) and an i.i.d. initialisation, and measure per depth N:\n"
            "test accuracy, weight regularity in depth, the distance to the 4x\n"
            "linearly refined net and to the Neural ODE of the interpolated weights,\n"
            "and the memory-free backward's gradient error (euler / corrected\n"
            "reconstruction), with log-log slopes against N. Writes\n"
            "resnet_or_ode.json and resnet_or_ode.png to --out."
        ),
    )
    parser.add_argument(
        "--depths",
        type=int_list,
        default=list(DEPTHS),
        help="depths N, comma-separated",
    )
    parser.add_argument("--seeds", type=int, default=1, help="independent repetitions")
    parser.add_argument("--steps", type=int, default=300, help="Adam steps")
    parser.add_argument("--batch-size", type=int, default=128, help="minibatch size")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    parser.add_argument("--dim", type=int, default=DIM, help="state dimension")
    parser.add_argument("--hidden", type=int, default=HIDDEN, help="hidden width")
    parser.add_argument(
        "--no-memory-free-training",
        action="store_true",
        help="skip training with the memory-free gradient",
    )
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed")
    parser.add_argument("--x64", action="store_true", help="compute in float64")
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="contdepth-out/resnet-or-ode",
        help="output directory",
    )
    parser.set_defaults(func=run)
    return parser


def _record(result: ResNetOrODEResult) -> dict[str, Any]:
    per_depth = {
        init: [
            {
                "depth": N,
                **{
                    name: values[i, j].tolist()
                    for name, values in result.measures.items()
                },
            }
            for j, N in enumerate(result.depths)
        ]
        for i, init in enumerate(result.inits)
    }
    fits = {
        name: {
            init: {
                **fit_record(fit),
                "seed_slopes": result.seed_slopes[name][init].tolist(),
            }
            for init, fit in per_init.items()
        }
        for name, per_init in result.fits.items()
    }
    mf = result.memory_free_training
    if mf is not None:
        mf = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in mf.items()}
    return {
        "paper": PAPER_SETTING,
        "ours": result.settings,
        "results": per_depth,
        "memory_free_training": mf,
        "fits": fits,
        "seconds_run": result.seconds,
        "stage_seconds": result.stage_seconds,
    }


def write_outputs(
    result: ResNetOrODEResult, out: str | os.PathLike, **extra
) -> dict[str, Any]:
    """Write `resnet_or_ode.json` (every number of `result`, the paper's setting next
    to ours, and `extra`) and `resnet_or_ode.png` to the directory `out` (created if
    needed); returns the JSON record."""
    return write_figure_and_record(
        out,
        "resnet_or_ode",
        lambda path: plot_resnet_or_ode(result, path),
        {**_record(result), **extra},
    )


def summary(result: ResNetOrODEResult) -> str:
    """The table `run` prints: per init and depth the seed means (geometric for the
    fitted quantities), then the fitted slopes."""
    from .._cli import markdown_table

    columns = [
        "accuracy",
        "refined_accuracy",
        "ode_samples_accuracy",
        "ode_accuracy",
        *FITTED,
    ]
    columns = [c for c in columns if c in result.measures]
    rows = []
    for i, init in enumerate(result.inits):
        for j, N in enumerate(result.depths):
            row = [init, N]
            for c in columns:
                v = result.measures[c][i, j]
                row.append(float(np.exp(np.log(v).mean()) if c in FITTED else v.mean()))
            rows.append(row)
    lines = [
        markdown_table(["init", "N", *columns], rows),
        "",
        markdown_table(
            ["slope vs N", *result.inits],
            [
                [
                    name,
                    *(
                        f"{f.slope:.3f} ± {f.slope_stderr:.3f}"
                        for f in result.fits[name].values()
                    ),
                ]
                for name in FITTED
            ],
        ),
    ]
    mf = result.memory_free_training
    if mf is not None:
        lines += [
            "",
            f"trained with the memory-free ({mf['reconstruction']}) gradient "
            f"at N = {mf['depth']}: test accuracy "
            + ", ".join(
                f"{init} {np.mean(mf['accuracy'][i]):.4f} (exact backprop "
                f"{np.mean(mf['exact_accuracy'][i]):.4f})"
                for i, init in enumerate(result.inits)
            ),
        ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run `contdepth resnet-or-ode`; returns the exit status."""
    start = time.perf_counter()
    result = run_resnet_or_ode(
        args.depths,
        key=jr.PRNGKey(args.seed),
        num_seeds=args.seeds,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        dim=args.dim,
        hidden=args.hidden,
        memory_free_training=not args.no_memory_free_training,
    )
    record = write_outputs(
        result, args.out, seed=args.seed, seconds=time.perf_counter() - start
    )
    print(summary(result))
    print(
        f"\nwrote {args.out}/resnet_or_ode.png and {args.out}/resnet_or_ode.json "
        f"({record['seconds']:.1f} s)"
    )
    return 0
