from collections.abc import Callable, Sequence
from typing import Literal

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .._custom_types import Args, State
from .._fields.protocol import (
    ARGS_UNKNOWN,
    check_field,
    check_field_state,
    lipschitz_bound,
)
from .._stacking import index_module, stack_modules
from .._validation import check_nonnegative_float, check_positive_int, check_real
from .base import AbstractDiscreteDepthModel


class ScaledResidualNet(AbstractDiscreteDepthModel):
    """A scaled residual stack: `y_{l+1} = (1 - beta) y_l + alpha f_l(l, y_l)`.

    Its block Jacobian is `(1 - beta) I + alpha J_f`, so
    `|1 - beta| + alpha Lip(f) <= 1` makes every block non-expansive and gradients
    cannot explode, by construction. Pass `alpha="nonexpansive"` to pick
    `alpha = (1 - |1 - beta|) / Lip(f)` from the fields' Lipschitz bounds.

    `alpha` is a scalar array leaf, so models built with different keys share one
    structure: `cd.load` into any `like`, `jax.vmap` over stacked models and
    `eqx.filter_eval_shape` of the constructor all work. Like every floating leaf it
    is differentiated by `jax.grad` and trained by `cd.train` (a learnable residual
    scale, as in ReZero); to keep it fixed, leave it out of the optimiser, e.g.
    `optax.masked`. A `"nonexpansive"` alpha is valid for the weights at construction;
    training moves them, and
    `eqx.tree_at(lambda m: m.alpha, net, net.nonexpansive_alpha())` recomputes it for
    the current ones. (Recomputing it on every call would keep the guarantee but make
    every forward pass pay for the spectral norms and differentiate through them.)

    `f_l` is called as `f(t=l, y, args)`. One field (any callable `f(t, y, args)`)
    means tied weights; a sequence of `num_layers` identically-structured fields (e.g.
    `eqx.Module`s differing only in their weights) means one field per layer.

    References: Szegedy et al. 2017 (residual scaling in Inception-v4); Bachlechner
    et al. 2021, "ReZero is All You Need"; Zhang et al. 2019, "Fixup Initialization".
    """

    fields: Callable
    tied: bool = eqx.field(static=True)
    alpha: Float[Array, ""]
    beta: float = eqx.field(static=True)
    _num_layers: int = eqx.field(static=True)

    def __init__(
        self,
        field_or_fields: Callable | Sequence[Callable],
        num_layers: int,
        *,
        alpha: float | Literal["nonexpansive"],
        beta: float = 0.0,
    ):
        """**Arguments:**

        - `field_or_fields`: one vector field (tied weights) or a sequence of
            `num_layers` identically-structured fields (one per layer).
        - `num_layers`: depth `N >= 1`.
        - `alpha`: the branch scale `>= 0`, or `"nonexpansive"` to choose the largest
            `alpha` with `|1 - beta| + alpha Lip(f) <= 1`.
        - `beta`: the skip damping; the skip is scaled by `1 - beta`.
        """
        num_layers = check_positive_int("num_layers", num_layers)
        if isinstance(field_or_fields, Sequence) and not isinstance(
            field_or_fields, str
        ):
            if len(field_or_fields) != num_layers:
                raise ValueError(
                    f"`field_or_fields` holds {len(field_or_fields)} fields but "
                    f"`num_layers` is {num_layers}: pass one field (tied) or exactly "
                    "`num_layers` fields."
                )
            for i, f in enumerate(field_or_fields):
                check_field(f"field_or_fields[{i}]", f)
            self.fields = stack_modules(list(field_or_fields), "field_or_fields")
            self.tied = False
        elif callable(field_or_fields):
            self.fields = check_field("field_or_fields", field_or_fields)
            self.tied = True
        else:
            raise TypeError(
                "`field_or_fields` must be a vector field (any callable `f(t, y, "
                "args)`) "
                f"or a sequence of them, got {type(field_or_fields).__name__}."
            )
        self.beta = check_real("beta", beta)
        self._num_layers = num_layers
        if isinstance(alpha, str):
            if alpha != "nonexpansive":
                raise ValueError(
                    f"`alpha` must be a number >= 0 or 'nonexpansive', got {alpha!r}."
                )
            if 1.0 - abs(1.0 - self.beta) <= 0:
                raise ValueError(
                    f"`alpha='nonexpansive'` needs |1 - beta| < 1 (0 < beta < 2), got "
                    f"beta={self.beta}: the skip alone is already not contractive."
                )
            self.alpha = self.nonexpansive_alpha()
        else:
            self.alpha = jnp.asarray(check_nonnegative_float("alpha", alpha))

    def nonexpansive_alpha(self) -> Float[Array, ""]:
        """The largest `alpha` with `|1 - beta| + alpha max_l Lip(f_l) <= 1` for the
        current weights (`1` if every field is constant). Works under `jit`/`vmap`."""
        margin = 1.0 - abs(1.0 - self.beta)
        lip = self.max_lipschitz()
        message = (
            "`alpha='nonexpansive'` needs a finite Lipschitz bound, but "
            "`cd.lipschitz_bound(field)` is inf (the field has no "
            "`lipschitz_bound()` method, or it is unbounded, e.g. AttentionField): "
            "pass a number for `alpha`."
        )
        if isinstance(lip, jax.core.Tracer):  # e.g. under eval_shape or vmap
            lip = eqx.error_if(lip, ~jnp.isfinite(lip), message)
        elif not bool(jnp.isfinite(lip)):
            raise ValueError(message)
        positive = lip > 0
        return jnp.where(positive, margin / jnp.where(positive, lip, 1.0), 1.0)

    @property
    def num_layers(self) -> int:
        return self._num_layers

    def layer(self, k) -> Callable:
        """The field of layer `k`."""
        return self.fields if self.tied else index_module(self.fields, k)

    def max_lipschitz(self) -> Array:
        """`max_l Lip(f_l)` from [`contdepth.lipschitz_bound`][] (`inf` if unknown)."""
        if self.tied:
            return lipschitz_bound(self.fields)
        return jnp.max(
            jnp.stack([lipschitz_bound(self.layer(i)) for i in range(self.num_layers)])
        )

    def block_lipschitz_bound(self) -> Array:
        """`|1 - beta| + alpha max_l Lip(f_l)`: at most 1 means non-expansive."""
        return abs(1.0 - self.beta) + self.alpha * self.max_lipschitz()

    def step(self, k: Int[Array, ""], y: State, args: Args = None) -> State:
        t = k.astype(y.dtype)
        f = self.layer(k)(t, y, args)
        return (1 - self.beta) * y + self.alpha.astype(y.dtype) * f

    def check_state(self, y: State, name: str = "y", args: Args = ARGS_UNKNOWN) -> None:
        check_field_state(self.layer(0), y, args, name)
