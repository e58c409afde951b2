"""Helpers shared by the Jacobian toolkit: argument checks, flattening a depth model to
a map `R^d -> R^d`, and choosing an autodiff mode the model supports."""

from collections.abc import Callable
from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Args, State
from .._fields.protocol import ARGS_UNKNOWN
from .._models.base import check_model_state
from .._models.neural_ode import NeuralODE
from .._validation import check_callable, check_float_array, check_positive_int


Mode = Literal["fwd", "rev"]
_BOTH_MODES = (diffrax.DirectAdjoint,)


def check_model_and_state(
    model, y: State, name: str = "model", args: Args = ARGS_UNKNOWN
) -> State:
    """`model` must be callable as `model(y, args)`; `y` a floating-point state it
    accepts (checked by its own `check_state` when it has one)."""
    check_callable(name, model)
    check_float_array("y", y)
    check_model_state(model, y, "y", args)
    return y


def check_choice(name: str, value, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(
            f"`{name}` must be one of {', '.join(repr(a) for a in allowed)}, got "
            f"{value!r}."
        )
    return value


def check_k(k, dim: int, name: str = "k") -> int:
    k = check_positive_int(name, k)
    if k > dim:
        raise ValueError(
            f"`{name}` must satisfy 1 <= {name} <= {dim} (the state dimension d = "
            f"{dim}), "
            f"got {name}={k}."
        )
    return k


def with_autodiff_mode(model, mode: Mode | Literal["both"]):
    """Return `model` with every part that cannot be differentiated in `mode` swapped
    for one that can: each [`contdepth.NeuralODE`][] in it (the model itself, or one
    inside a `Classifier`, an `AugmentedNeuralODE`, any pytree) whose diffrax adjoint
    does not support `mode`, and each reversible-memory model.

    The substitute adjoint (`ForwardMode` for forward mode, `DirectAdjoint` for both)
    runs the same solver on the same steps and differentiates the same discrete
    computation (discretise-then-optimise), so the numbers agree with reverse mode to
    round-off; a reversible model's `"store"` twin is the same function.
    """
    return jax.tree_util.tree_map(
        lambda node: _swap(node, mode), model, is_leaf=_needs_a_look
    )


def _needs_a_look(node) -> bool:
    return isinstance(node, NeuralODE) or _is_reversible(node)


def _is_reversible(node) -> bool:
    memory = getattr(node, "memory", None)
    return isinstance(memory, str) and memory == "reversible"


def _swap(node, mode: Mode | Literal["both"]):
    if _is_reversible(node) and mode in ("fwd", "both"):
        # Reversible models' custom VJP is reverse-only.
        return node.with_memory("store")
    if not isinstance(node, NeuralODE):
        return node
    adjoint = node.adjoint
    if mode == "fwd":
        if isinstance(adjoint, (diffrax.ForwardMode, *_BOTH_MODES)):
            return node
        new = diffrax.ForwardMode()
    elif mode == "rev":
        if not isinstance(adjoint, diffrax.ForwardMode):
            return node
        new = diffrax.RecursiveCheckpointAdjoint()
    else:
        if isinstance(adjoint, _BOTH_MODES):
            return node
        new = diffrax.DirectAdjoint()
    return eqx.tree_at(lambda m: m.adjoint, node, new)


def flat_map(
    model, y: State, args: Args
) -> tuple[Callable, jax.Array, tuple[int, ...]]:
    """`model` as a map of flat vectors: returns `(fn, y_flat, out_shape)` with
    `fn(x_flat) = model(x_flat.reshape(y.shape), args).reshape(-1)`."""
    shape = y.shape

    def fn(x):
        return jnp.reshape(model(jnp.reshape(x, shape), args), (-1,))

    out = jax.eval_shape(lambda: model(y, args))
    if not hasattr(out, "shape") or not jnp.issubdtype(out.dtype, jnp.inexact):
        raise TypeError(
            "`model(y, args)` must return one floating-point array, got "
            f"{type(out).__name__}."
        )
    return fn, jnp.reshape(y, (-1,)), tuple(out.shape)


def check_square(y: State, out_shape: tuple[int, ...], what: str) -> int:
    """The Jacobian must be square: the model maps a state to a state of equal size."""
    d_in, d_out = int(np.prod(y.shape)), int(np.prod(out_shape))
    if d_in != d_out:
        raise ValueError(
            f"{what} needs a square Jacobian, but the model maps `y` of shape "
            f"{tuple(y.shape)} (d = {d_in}) to shape {out_shape} (d = {d_out}). "
            "Pass a depth model whose output has the shape of its input."
        )
    return d_in
