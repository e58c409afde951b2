"""Random baseline stacks for the depth sweep, with weights drawn inside the loop.

Layer `k` draws its weights from `fold_in(key, k)`, so nothing of size `N` is stored
and, with a traced depth `n`, one compiled function serves every `N` (forward mode
through a `while` loop: exactly what `jax.jacfwd` needs). With a Python-int depth the
loop is a `scan`, which reverse mode (the matrix-free path) also accepts.
"""

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._step_rule import residual_update
from .._validation import check_float_array, check_state_shape


def _uniform(key, shape, fan_in, dtype):
    # PyTorch/Equinox default initialisation, as in `cd.PlainNet`.
    lim = 1 / jnp.sqrt(jnp.asarray(fan_in, dtype))
    return jr.uniform(key, shape, dtype, -lim, lim)


class RandomStack(eqx.Module):
    """`kind="plain"`: `y <- tanh(W_k y + b_k)` (a random [`contdepth.PlainNet`][]);
    `kind="branch"`: `y <- y + scale * f_k(y)` with
    `f_k(y) = V_k tanh(W_k y + b_k) + c_k` i.i.d. random one-hidden-layer branches
    (depth-varying random weights)."""

    key: PRNGKeyArray
    num_layers: int | Int[Array, ""]
    scale: Float[Array, ""]
    kind: str = eqx.field(static=True)
    dim: int = eqx.field(static=True)

    def check_state(self, y, name: str = "y") -> None:
        check_float_array(name, y)
        what = f"a random {self.kind} stack of dim {self.dim}"
        check_state_shape(name, y, (self.dim,), what)

    def __call__(self, y: Float[Array, " d"], args=None) -> Float[Array, " d"]:
        d = y.shape[0]
        dtype = y.dtype

        def plain(k, y):
            kw, kb = jr.split(jr.fold_in(self.key, k))
            w = _uniform(kw, (d, d), d, dtype)
            return jnp.tanh(w @ y + _uniform(kb, (d,), d, dtype))

        def branch(k, y):
            kw, kb, kv, kc = jr.split(jr.fold_in(self.key, k), 4)
            hidden = jnp.tanh(
                _uniform(kw, (d, d), d, dtype) @ y + _uniform(kb, (d,), d, dtype)
            )
            f = _uniform(kv, (d, d), d, dtype) @ hidden + _uniform(kc, (d,), d, dtype)
            return residual_update(y, self.scale.astype(dtype), f)

        body = plain if self.kind == "plain" else branch
        return lax.fori_loop(0, self.num_layers, body, y)
