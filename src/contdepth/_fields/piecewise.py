from collections.abc import Callable, Sequence
from typing import cast

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Args, RealScalarLike, State
from .._stacking import index_module, stack_modules
from .._validation import check_positive_float
from .base import AbstractVectorField
from .protocol import check_field, check_field_state, lipschitz_bound


def _same_structure(fields) -> bool:
    dyn0, static0 = eqx.partition(fields[0], eqx.is_array)
    shapes0 = jax.tree.map(jnp.shape, dyn0)
    for f in fields[1:]:
        dyn, static = eqx.partition(f, eqx.is_array)
        if static != static0 or jax.tree.map(jnp.shape, dyn) != shapes0:
            return False
    return True


class PiecewiseField(AbstractVectorField):
    """Depth-varying weights: `M` fields, piece `i` acting on `[iT/M, (i+1)T/M)`.

    With `EulerResNet(PiecewiseField(fields, T), num_steps=M, horizon=T)` this is a
    standard untied ResNet of `M` blocks (block `i` scaled by `h = T/M`); with
    `num_steps = rM` it is the same ResNet refined in depth, each block applied `r`
    times with step `h/r`. Pieces of one architecture (same class, hyper-parameters and
    weight shapes, e.g. `M` `cd.MLPField`s) are stored stacked, so the cost of a call
    does not grow with `M`; any other callables `f(t, y, args)` are dispatched with
    `lax.switch`.

    The field is discontinuous in `t` at the piece boundaries; `jump_times` reports
    them, and [`contdepth.NeuralODE`][] passes them to adaptive step-size controllers
    (diffrax's `jump_ts`) so that no step straddles a switch.
    """

    pieces: Callable | tuple[Callable, ...]
    stacked: bool = eqx.field(static=True)
    num_pieces: int = eqx.field(static=True)
    horizon: float = eqx.field(static=True)

    def __init__(self, fields: Sequence[Callable], horizon: float):
        """**Arguments:**

        - `fields`: a non-empty sequence of vector fields, each any callable
            `f(t, y, args)`.
        - `horizon`: the horizon `T` split evenly between the pieces.
        """
        if not isinstance(fields, Sequence) or isinstance(fields, str):
            raise TypeError(
                "`fields` must be a list or tuple of vector fields, got "
                f"{type(fields).__name__}."
            )
        if len(fields) == 0:
            raise ValueError(
                "`fields` must hold at least one vector field, got an empty sequence."
            )
        for i, f in enumerate(fields):
            check_field(f"fields[{i}]", f)
        self.horizon = check_positive_float("horizon", horizon)
        self.num_pieces = len(fields)
        self.stacked = _same_structure(fields)
        if self.stacked:
            self.pieces = stack_modules(list(fields), "fields")
        else:
            self.pieces = tuple(fields)

    def piece(self, i) -> Callable:
        """The field of piece `i` (an int; a traced integer for stacked pieces)."""
        return index_module(self.pieces, i) if self.stacked else self._unstacked()[i]

    def _unstacked(self) -> tuple[Callable, ...]:
        # Without `stacked`, `__init__` stored the fields as a tuple.
        return cast(tuple[Callable, ...], self.pieces)

    def _slack(self, dtype) -> float:
        # Solvers accumulate t (t_{k+1} = t_k + h); tolerate a few ulps at a boundary so
        # that step k = i r lands in piece i, as in exact arithmetic.
        return 100 * float(jnp.finfo(dtype).eps) * self.num_pieces

    def piece_index(self, t: RealScalarLike) -> Array:
        """Index of the piece active at time `t`, clipped to `[0, M - 1]`."""
        t = jnp.asarray(t)
        dtype = t.dtype if jnp.issubdtype(t.dtype, jnp.floating) else jnp.float32
        scaled = t * (self.num_pieces / self.horizon) + self._slack(dtype)
        index = jnp.floor(scaled).astype(jnp.int32)
        return jnp.clip(index, 0, self.num_pieces - 1)

    def jump_times(self, dtype=jnp.float32) -> tuple[float, ...]:
        """The times where `piece_index` switches, `(i - slack) T / M` for
        `i = 1, ..., M - 1` (within a few ulps of `i T / M`)."""
        slack = self._slack(dtype)
        step = self.horizon / self.num_pieces
        return tuple((i - slack) * step for i in range(1, self.num_pieces))

    def __call__(self, t: RealScalarLike, y: State, args: Args = None) -> State:
        index = self.piece_index(t)
        if self.stacked:
            return self.piece(index)(t, y, args)
        branches = [lambda t_, y_, a_, f=f: f(t_, y_, a_) for f in self._unstacked()]
        return lax.switch(index, branches, t, y, args)

    def check_state(self, y, name: str = "y") -> None:
        check_field_state(self.piece(0), y, name=name)

    def lipschitz_bound(self) -> Float[Array, ""]:
        if self.stacked:
            bounds = jax.vmap(lambda i: lipschitz_bound(self.piece(i)))(
                jnp.arange(self.num_pieces)
            )
        else:
            bounds = jnp.stack([lipschitz_bound(f) for f in self._unstacked()])
        return jnp.max(bounds)
