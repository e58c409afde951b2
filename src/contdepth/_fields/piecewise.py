from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Args, RealScalarLike, State
from .._stacking import index_module, stack_modules
from .._validation import check_positive_float
from .base import AbstractVectorField


class PiecewiseField(AbstractVectorField):
    """Depth-varying weights: `M` fields of one architecture, piece `i` acting on
    `[iT/M, (i+1)T/M)`.

    With `EulerResNet(PiecewiseField(fields, T), num_steps=M, horizon=T)` this is a
    standard untied ResNet of `M` blocks (block `i` scaled by `h = T/M`); with
    `num_steps = rM` it is the same ResNet refined in depth, each block applied `r`
    times with step `h/r`. The pieces are stored stacked, so the cost of a call does not
    grow with `M`.
    """

    stacked: AbstractVectorField
    num_pieces: int = eqx.field(static=True)
    horizon: float = eqx.field(static=True)

    def __init__(self, fields: Sequence[AbstractVectorField], horizon: float):
        """**Arguments:**

        - `fields`: a non-empty sequence of vector fields with identical structure
            (same class, same hyper-parameters, same weight shapes).
        - `horizon`: the horizon `T` split evenly between the pieces.
        """
        if isinstance(fields, AbstractVectorField) or not isinstance(fields, Sequence):
            raise TypeError(
                "`fields` must be a list or tuple of vector fields, got "
                f"{type(fields).__name__}."
            )
        if len(fields) == 0:
            raise ValueError(
                "`fields` must hold at least one vector field, got an empty sequence."
            )
        for i, f in enumerate(fields):
            if not isinstance(f, AbstractVectorField):
                raise TypeError(
                    f"`fields[{i}]` must be an AbstractVectorField, got {type(f).__name__}."
                )
        self.horizon = check_positive_float("horizon", horizon)
        self.stacked = stack_modules(list(fields), "fields")
        self.num_pieces = len(fields)

    def piece(self, i) -> AbstractVectorField:
        """The field of piece `i` (an int or a traced integer)."""
        return index_module(self.stacked, i)

    def piece_index(self, t: RealScalarLike) -> Array:
        """Index of the piece active at time `t`, clipped to `[0, M - 1]`."""
        t = jnp.asarray(t)
        dtype = t.dtype if jnp.issubdtype(t.dtype, jnp.floating) else jnp.float32
        # Solvers accumulate t (t_{k+1} = t_k + h); tolerate a few ulps at a boundary so
        # that step k = i r lands in piece i, as in exact arithmetic.
        slack = 100 * jnp.finfo(dtype).eps * self.num_pieces
        index = jnp.floor(t * (self.num_pieces / self.horizon) + slack).astype(jnp.int32)
        return jnp.clip(index, 0, self.num_pieces - 1)

    def __call__(self, t: RealScalarLike, y: State, args: Args = None) -> State:
        return self.piece(self.piece_index(t))(t, y, args)

    def check_state(self, y, name: str = "y") -> None:
        self.piece(0).check_state(y, name)

    def lipschitz_bound(self) -> Float[Array, ""]:
        return jnp.max(jax.vmap(lambda i: self.piece(i).lipschitz_bound())(
            jnp.arange(self.num_pieces)
        ))
