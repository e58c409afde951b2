"""Shape aliases shared by the whole package (jaxtyping strings)."""

from typing import Any, TypeAlias

from jaxtyping import Array, ArrayLike, Float, Int, PyTree


#: One state of a depth model: a vector `(dim,)`, an image `(C, H, W)` or a token set
#: `(L, D)`. Models never carry a batch axis; batch with `jax.vmap`.
State: TypeAlias = Float[Array, "*state"]
StateLike: TypeAlias = Float[ArrayLike, "*state"]
Vector: TypeAlias = Float[Array, " dim"]
Matrix: TypeAlias = Float[Array, "dim dim"]
Scalar: TypeAlias = Float[Array, ""]
RealScalarLike: TypeAlias = float | int | Float[ArrayLike, ""]
Labels: TypeAlias = Int[Array, " n"]
Args: TypeAlias = PyTree[Any]
