import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Args, RealScalarLike
from .._validation import check_float_array, check_key, check_positive_int
from .base import AbstractVectorField


class AttentionField(AbstractVectorField):
    """A self-attention vector field on token sets `(L, D)`:
    `F(t, y) = MultiHeadAttention(y, y, y)`.

    Every output token depends on every input token, so the flow is *global*: the
    per-step Jacobian is dense (Vaswani et al. 2017; Lu et al. 2019, "Understanding and
    Improving Transformer From a Multi-Particle Dynamic System Point of View").
    """

    attention: eqx.nn.MultiheadAttention
    dim: int = eqx.field(static=True)

    def __init__(self, dim: int, *, num_heads: int, key: PRNGKeyArray):
        """**Arguments:**

        - `dim`: token size `D`; must be divisible by `num_heads`.
        - `num_heads`: number of attention heads.
        - `key`: a `jax.random.PRNGKey` for the initial weights.
        """
        self.dim = check_positive_int("dim", dim)
        num_heads = check_positive_int("num_heads", num_heads)
        if dim % num_heads != 0:
            raise ValueError(
                f"`dim` ({dim}) must be divisible by `num_heads` ({num_heads})."
            )
        self.attention = eqx.nn.MultiheadAttention(
            num_heads=num_heads,
            query_size=dim,
            qk_size=dim // num_heads,
            vo_size=dim // num_heads,
            key=check_key("key", key),
        )

    def __call__(
        self, t: RealScalarLike, y: Float[Array, "L D"], args: Args = None
    ) -> Float[Array, "L D"]:
        return self.attention(y, y, y).astype(y.dtype)

    def check_state(self, y, name: str = "y") -> None:
        check_float_array(name, y)
        if y.ndim != 2 or y.shape[1] != self.dim or y.shape[0] == 0:
            raise ValueError(
                f"`{name}` has shape {tuple(y.shape)}, but "
                f"AttentionField(dim={self.dim}) "
                f"expects a single token set of shape (L, {self.dim}) with L >= 1 "
                "(no batch axis: use `jax.vmap` over a batch)."
            )

    def lipschitz_bound(self) -> Float[Array, ""]:
        # Dot-product self-attention is not globally Lipschitz (Kim et al. 2021, "The
        # Lipschitz Constant of Self-Attention"), so the only valid global bound is inf.
        return jnp.asarray(jnp.inf)
