import inspect
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._classifier import Classifier
from .._custom_types import Args
from .._fields.mlp import MLPField
from .._models.euler import EulerResNet
from .euler_mlp import euler_mlp_batched, EulerMLPConfig


# The default `final_activation` of `eqx.nn.MLP` (the identity), read from its public
# signature; a future equinox without one keeps the fast path off.
_EQX_IDENTITY = getattr(
    inspect.signature(eqx.nn.MLP.__init__).parameters.get("final_activation"),
    "default",
    None,
)
if _EQX_IDENTITY is inspect.Parameter.empty:  # pragma: no cover
    _EQX_IDENTITY = None


def _has_arrays(tree) -> bool:
    return len(jax.tree.leaves(eqx.filter(tree, eqx.is_array))) > 0


def _euler_mlp_config(model, ys, args) -> EulerMLPConfig | None:
    """The static configuration if `model` on `ys` can take the fused path."""
    if type(model) is not EulerResNet:
        return None
    field = model.field
    # The exact type (a subclass may change `__call__`); `isinstance` narrows the type.
    if not isinstance(field, MLPField) or type(field) is not MLPField:
        return None
    mlp = field.mlp
    if args is not None or mlp.depth == 0 or getattr(mlp, "scan", False):
        return None
    if _EQX_IDENTITY is None or mlp.final_activation is not _EQX_IDENTITY:
        return None
    if _has_arrays(mlp.activation):  # learnt activations: keep the generic path
        return None
    if ys.ndim != 2 or ys.shape[1] != field.dim:
        return None
    dtypes = {ys.dtype} | {
        leaf.dtype for leaf in jax.tree.leaves(eqx.filter(mlp, eqx.is_array))
    }
    if len(dtypes) != 1 or not jnp.issubdtype(ys.dtype, jnp.floating):
        return None
    return EulerMLPConfig(
        num_steps=model.num_steps,
        step_size=model.step_size,
        activation=mlp.activation,
        time_dependent=field.time_dependent,
    )


# Backends where the fused Euler-MLP path is measured faster than `jax.vmap(model)`:
# on CPU its backward pass keeps every matmul in the fast GEMM layout (about 1.5-2x on
# fwd+grad, `benchmarks/euler.py`); on an H200 it was slower for training (2.13 vs
# 1.79 ms per step, issue 15), so GPUs and TPUs take the `jax.vmap` path.
FUSED_BACKENDS = frozenset({"cpu"})
_PATHS = ("auto", "fused", "vmap")


def batched_apply(
    model,
    ys: Float[Array, " batch *state"],
    args: Args = None,
    *,
    path: Literal["auto", "fused", "vmap"] = "auto",
) -> Float[Array, " batch *state"]:
    """`jax.vmap(model)(ys)`, through a fused batched implementation where one exists
    and is faster.

    Currently fused: [`contdepth.EulerResNet`][] on an [`contdepth.MLPField`][] (any
    fixed activation, time-dependent or not, `args=None`, one dtype throughout), alone
    or as the body of a [`contdepth.Classifier`][]. Its backward pass is a
    hand-written exact VJP whose matrix products are all in the layout the CPU GEMM
    kernels want (see `contdepth/_fastpath/euler_mlp.py`), about twice as fast as
    `jax.grad` through `jax.vmap(model)` on CPU. It supports reverse mode
    (`jax.grad`, `jax.vjp`) only; for forward mode (`jax.jvp`, `jax.jacfwd`) call
    `jax.vmap(model)` directly. Every other model falls back to `jax.vmap(model)`,
    with identical results.

    **Arguments:**

    - `model`: a single-sample model `model(y, args) -> y_out`.
    - `ys`: a batch of states, batch axis first.
    - `args`: forwarded to the model (the fused path needs `args=None`).
    - `path`: `"auto"` (the fused path where it exists and the default backend is
        one where it is measured faster: `contdepth._fastpath.batched.FUSED_BACKENDS`,
        today the CPU), `"fused"` (always; a `ValueError` if `model` has none) or
        `"vmap"` (never).

    **Returns:**

    The batch of outputs, same shape and dtype as `ys`.
    """
    if path not in _PATHS:
        raise ValueError(f"`path` must be one of {_PATHS}, got {path!r}.")
    if isinstance(model, Classifier):
        states = jax.vmap(model.encoder)(ys)
        out = batched_apply(model.body, states, args, path=path)
        return jax.vmap(model.readout)(out)
    config = None if path == "vmap" else _euler_mlp_config(model, ys, args)
    if path == "fused" and config is None:
        raise ValueError(
            f"`path='fused'`: no fused implementation for a {type(model).__name__} on "
            f"states of shape {tuple(ys.shape)} with args={args!r} (fused: an "
            "EulerResNet of an MLPField, args=None, one dtype). Use `path='auto'`."
        )
    if path == "auto" and jax.default_backend() not in FUSED_BACKENDS:
        config = None
    if config is None:
        return jax.vmap(lambda y: model(y, args))(ys)
    model.check_state(ys[0], "ys[i]")
    layers = tuple((layer.weight, layer.bias) for layer in model.field.mlp.layers)
    return euler_mlp_batched(config, layers, ys)
