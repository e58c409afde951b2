import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._custom_types import Args, RealScalarLike, Vector
from .._validation import check_finite_array, check_float_array, check_state_shape
from .base import AbstractVectorField


class LinearField(AbstractVectorField):
    """The linear field `F(t, y) = A y`: the analytic reference.

    Forward Euler gives `(I + hA)^N y` exactly and the flow is `expm(TA) y`.
    """

    matrix: Float[Array, "dim dim"]

    def __init__(self, matrix: Float[ArrayLike, "dim dim"]):
        """**Arguments:**

        - `matrix`: a square floating-point matrix `A` of shape `(dim, dim)`.
        """
        check_float_array("matrix", matrix, ndim=2)
        shape = jnp.shape(matrix)
        if shape[0] != shape[1] or shape[0] == 0:
            raise ValueError(
                f"`matrix` must be square and non-empty, got shape {tuple(shape)}."
            )
        check_finite_array("matrix", matrix)
        self.matrix = jnp.asarray(matrix)

    @property
    def dim(self) -> int:
        return self.matrix.shape[0]

    def __call__(self, t: RealScalarLike, y: Vector, args: Args = None) -> Vector:
        # Same dtype out as in (a float64 `A` must not promote a float32 state).
        return (self.matrix @ y).astype(y.dtype)

    def check_state(self, y, name: str = "y") -> None:
        check_float_array(name, y)
        check_state_shape(name, y, (self.dim,), f"LinearField(dim={self.dim})")

    def lipschitz_bound(self) -> Float[Array, ""]:
        return jnp.linalg.norm(self.matrix, ord=2)
