"""Compile caches keyed by what a function computes, not by which object it is.

`optax.adam(1e-3)` returns new closures on every call, and `jax.jit` hashes static
arguments by identity, so two calls of `cd.train(..., optimizer=optax.adam(1e-3))`
would compile the same step twice. `Keyed` wraps such a value with a *structural* key:
a plain function is its code object plus the keys of its closure cells and defaults;
tuples, lists, dicts and `functools.partial` recurse; numbers, strings and small
arrays are their values. Anything else (an object with its own `__eq__`/`__hash__`)
keys as itself, which for plain objects means by identity: a cache miss, never a wrong
hit.
"""

import functools
import types
from typing import Any

import numpy as np


_MAX_DEPTH = 12
_MAX_ARRAY = 4096  # entries: larger closed-over arrays key by identity


class _Unkeyable(Exception):
    pass


def _function_key(fn: types.FunctionType, depth: int):
    cells = []
    for cell in fn.__closure__ or ():
        try:
            contents = cell.cell_contents
        except ValueError:  # an empty cell (a name assigned later)
            raise _Unkeyable from None
        cells.append(_key(contents, depth + 1))
    kwdefaults = fn.__kwdefaults__ or {}
    return (
        "function",
        fn.__code__,
        id(fn.__globals__),
        tuple(cells),
        _key(fn.__defaults__, depth + 1),
        _key(kwdefaults, depth + 1),
    )


def _key(value: Any, depth: int = 0):
    if depth > _MAX_DEPTH:
        raise _Unkeyable
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return (type(value), value)
    if isinstance(value, types.FunctionType):
        return _function_key(value, depth)
    if isinstance(value, functools.partial):
        return (
            "partial",
            _key(value.func, depth + 1),
            _key(value.args, depth + 1),
            _key(value.keywords, depth + 1),
        )
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(_key(v, depth + 1) for v in value))
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: repr(kv[0]))
        return (dict, tuple((k, _key(v, depth + 1)) for k, v in items))
    if (
        isinstance(value, (np.ndarray, np.generic))
        or type(value).__module__.startswith(("jax", "jaxlib"))
        and hasattr(value, "dtype")
        and hasattr(value, "shape")
    ):
        if np.size(value) > _MAX_ARRAY or _is_tracer(value):
            raise _Unkeyable
        array = np.asarray(value)
        return ("array", str(array.dtype), array.shape, array.tobytes())
    hash(value)  # raises TypeError for unhashable values
    return ("object", value)


def _is_tracer(value) -> bool:
    import jax.core

    return isinstance(value, jax.core.Tracer)


class Keyed:
    """A hashable stand-in for `value` whose equality is structural (see the module
    docstring); use it for static arguments of `jax.jit`/`eqx.filter_jit`."""

    __slots__ = ("value", "_key", "_hash")

    def __init__(self, value: Any):
        self.value = value
        try:
            key = _key(value)
            hash_ = hash(key)
        except (_Unkeyable, TypeError):
            key = ("identity", id(value))  # `self.value` keeps the id from being reused
            hash_ = hash(key)
        self._key = key
        self._hash = hash_

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        if not isinstance(other, Keyed):
            return False
        try:
            return bool(self._key == other._key)
        except Exception:  # an `__eq__` that returns arrays: not provably equal
            return False

    def __repr__(self) -> str:
        return f"Keyed({self.value!r})"
