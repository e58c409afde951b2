from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Args, RealScalarLike, State
from .base import AbstractVectorField
from .protocol import check_field_state, lipschitz_bound


class CoupledField(AbstractVectorField):
    """The continuous limit of a [`contdepth.ReversibleResNet`][] on `y = [y1, y2]`:
    `dy1/dt = F_a(t, y2)`, `dy2/dt = F_b(t, y1)` (a separable, Hamiltonian-like flow;
    the network is its symplectic-Euler discretisation).

    `F_a` and `F_b` are any callables `f(t, y_half, args)`. Its Lipschitz constant is at
    most `max(L_a, L_b)`: the two halves of the output depend on disjoint halves of the
    input.
    """

    field_a: Callable
    field_b: Callable

    def __call__(self, t: RealScalarLike, y: State, args: Args = None) -> State:
        half = y.shape[-1] // 2
        y1, y2 = y[..., :half], y[..., half:]
        return jnp.concatenate(
            [self.field_a(t, y2, args), self.field_b(t, y1, args)], axis=-1
        )

    def check_state(self, y: State, name: str = "y") -> None:
        if y.ndim == 0 or y.shape[-1] % 2 != 0:
            raise ValueError(
                f"`{name}` has shape {tuple(y.shape)}, but a coupled field splits the "
                "last axis in two equal halves, so it must have even size."
            )
        half = jax.ShapeDtypeStruct((*y.shape[:-1], y.shape[-1] // 2), y.dtype)
        check_field_state(self.field_a, half, name=f"{name}[..., half:]")
        check_field_state(self.field_b, half, name=f"{name}[..., :half]")

    def lipschitz_bound(self) -> Float[Array, ""]:
        return jnp.maximum(lipschitz_bound(self.field_a), lipschitz_bound(self.field_b))
