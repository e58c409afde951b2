import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Args, RealScalarLike, State
from .base import AbstractVectorField


class CoupledField(AbstractVectorField):
    """The continuous limit of a [`contdepth.ReversibleResNet`][] on `y = [y1, y2]`:
    `dy1/dt = F_a(t, y2)`, `dy2/dt = F_b(t, y1)` (a separable, Hamiltonian-like flow;
    the network is its symplectic-Euler discretisation).

    Its Lipschitz constant is at most `max(L_a, L_b)`: the two halves of the output
    depend on disjoint halves of the input.
    """

    field_a: AbstractVectorField
    field_b: AbstractVectorField

    def __call__(self, t: RealScalarLike, y: State, args: Args = None) -> State:
        half = y.shape[-1] // 2
        y1, y2 = y[..., :half], y[..., half:]
        return jnp.concatenate(
            [self.field_a(t, y2, args), self.field_b(t, y1, args)], axis=-1
        )

    def check_state(self, y: State, name: str = "y") -> None:
        if y.ndim == 0 or y.shape[-1] % 2 != 0:
            raise ValueError(
                f"`{name}` has shape {tuple(y.shape)}, but a coupled field splits the last "
                "axis in two equal halves, so it must have even size."
            )
        half = jax.ShapeDtypeStruct((*y.shape[:-1], y.shape[-1] // 2), y.dtype)
        self.field_a.check_state(half, f"{name}[..., half:]")
        self.field_b.check_state(half, f"{name}[..., :half]")

    def lipschitz_bound(self) -> Float[Array, ""]:
        return jnp.maximum(self.field_a.lipschitz_bound(), self.field_b.lipschitz_bound())


