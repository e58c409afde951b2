"""Argument checks shared by every public constructor and function.

Each check raises `TypeError` (wrong kind of object) or `ValueError` (right kind, bad
value) with a message that names the argument, the value received and what is allowed.
"""

import math
import numbers
from collections.abc import Sequence

import jax
import jax.core
import jax.numpy as jnp
import numpy as np


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_positive_int(name: str, value) -> int:
    """`value` must be an integer (not a bool, not a float) >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, (np.ndarray, jax.Array)) and value.shape == ():
            if jnp.issubdtype(value.dtype, jnp.integer):
                value = int(value)
                return check_positive_int(name, value)
        raise TypeError(
            f"`{name}` must be a Python int >= 1, got {_show(value)} of type "
            f"{type(value).__name__}. Pass e.g. `{name}=8`."
        )
    value = int(value)
    if value < 1:
        raise ValueError(f"`{name}` must be an int >= 1, got {value}.")
    return value


def check_positive_float(name: str, value) -> float:
    """`value` must be a real, finite number > 0 (a concrete value, not a tracer)."""
    if isinstance(value, bool):
        raise TypeError(f"`{name}` must be a finite real number > 0, got {value!r}.")
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"`{name}` must be a concrete number, got a traced value. It is a static "
            "hyper-parameter: build the model outside `jax.jit`."
        )
    try:
        arr = np.asarray(value)
    except Exception as e:  # pragma: no cover - exotic objects
        raise TypeError(
            f"`{name}` must be a finite real number > 0, got {_show(value)}."
        ) from e
    if arr.shape != () or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(
            f"`{name}` must be a finite real number > 0, got {_show(value)} "
            f"(shape {arr.shape}, dtype {arr.dtype})."
        )
    out = float(arr)
    if not math.isfinite(out) or out <= 0:
        raise ValueError(f"`{name}` must be a finite real number > 0, got {out}.")
    return out


def check_nonnegative_float(name: str, value) -> float:
    """`value` must be a real, finite number >= 0 (Python, NumPy or 0-d JAX scalar)."""
    if (
        isinstance(value, (np.ndarray, jax.Array))
        and value.shape == ()
        and not isinstance(value, jax.core.Tracer)
    ):
        if jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(
            value.dtype, jnp.integer
        ):
            value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a real number >= 0, got {_show(value)} of type "
            f"{type(value).__name__}."
        )
    out = float(value)
    if not math.isfinite(out) or out < 0:
        raise ValueError(f"`{name}` must be a finite real number >= 0, got {out}.")
    return out


def check_float_array(name: str, value, *, ndim: int | None = None):
    """`value` must be a floating-point array (float16/32/64); ints and complex are
    refused instead of being cast, so nothing is silently converted."""
    if not hasattr(value, "dtype") or not hasattr(value, "shape"):
        if isinstance(value, (list, tuple, numbers.Real)):
            raise TypeError(
                f"`{name}` must be a JAX/NumPy floating-point array, got a "
                f"{type(value).__name__}. Wrap it: `jnp.asarray({name}, dtype=float)`."
            )
        raise TypeError(
            f"`{name}` must be a JAX/NumPy floating-point array, got "
            f"{type(value).__name__}."
        )
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(
            f"`{name}` must have a floating-point dtype (float16/32/64), got dtype "
            f"{value.dtype}. Convert explicitly, e.g. `{name}.astype(jnp.float32)`."
        )
    if ndim is not None and value.ndim != ndim:
        raise ValueError(
            f"`{name}` must have {ndim} dimension(s), got shape {tuple(value.shape)}."
        )
    return value


def check_state_shape(name: str, value, expected: Sequence[int | None], what: str):
    """Shape check against a pattern; `None` entries match any size."""
    shape = tuple(value.shape)
    ok = len(shape) == len(expected) and all(
        e is None or e == s for e, s in zip(expected, shape)
    )
    if not ok:
        pattern = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(
            f"`{name}` has shape {shape}, but {what} expects a single state of shape "
            f"{pattern} (no batch axis: use `jax.vmap` over a batch)."
        )


def check_real(name: str, value) -> float:
    """`value` must be a finite real number (any sign)."""
    if (
        isinstance(value, (np.ndarray, jax.Array))
        and value.shape == ()
        and not isinstance(value, jax.core.Tracer)
    ):
        if not jnp.issubdtype(value.dtype, jnp.complexfloating):
            value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a finite real number, got {_show(value)} of type "
            f"{type(value).__name__}."
        )
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"`{name}` must be a finite real number, got {out}.")
    return out


def check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"`{name}` must be True or False, got {_show(value)} of type "
            f"{type(value).__name__}."
        )
    return bool(value)


def check_callable(name: str, value):
    if not callable(value):
        raise TypeError(
            f"`{name}` must be callable (e.g. `jax.nn.tanh`), got {_show(value)} of "
            "type "
            f"{type(value).__name__}."
        )
    return value


def check_key(name: str, key):
    """`key` must be a JAX PRNG key: a typed key (`jax.random.key(0)`, shape `()`) or a
    raw `uint32` key (`jax.random.PRNGKey(0)`, shape `(2,)`)."""
    hint = "Pass e.g. `key=jax.random.PRNGKey(0)` or `key=jax.random.key(0)`."
    dtype = getattr(key, "dtype", None)
    shape = getattr(key, "shape", None)
    if dtype is None or shape is None or isinstance(key, (bool, int, float)):
        raise TypeError(
            f"`{name}` must be a JAX PRNG key, got {_show(key)} of type "
            f"{type(key).__name__}. {hint}"
        )
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if tuple(shape) != ():
            raise ValueError(
                f"`{name}` must be a single PRNG key (shape ()), got a key array of "
                "shape "
                f"{tuple(shape)}. Split it and pass one key."
            )
        return key
    if dtype != jnp.uint32 or tuple(shape) != (2,):
        raise TypeError(
            f"`{name}` must be a JAX PRNG key, got an array of dtype {dtype} and shape "
            f"{tuple(shape)} (a raw key is uint32 of shape (2,)). {hint}"
        )
    return key


def check_finite_array(name: str, value) -> None:
    """Raise `ValueError` if a concrete array holds NaN or inf (tracers are skipped: use
    `eqx.error_if` for data-dependent checks under `jit`)."""
    if isinstance(value, jax.core.Tracer):
        return
    arr = np.asarray(value)
    if not (
        np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.complexfloating)
    ):
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"`{name}` contains {int(bad.sum())} non-finite entr"
            f"{'y' if bad.sum() == 1 else 'ies'} (NaN or inf) out of {arr.size}, the "
            "first "
            f"at index {first} (value {arr[first]}). Clean or impute the data first."
        )
