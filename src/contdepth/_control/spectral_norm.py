"""Spectrally normalised vector fields, whose Lipschitz constant is at most a
user-set bound by construction, and the non-expansive residual network built on them.

References: Miyato, Kataoka, Koyama & Yoshida 2018, "Spectral Normalization for
Generative Adversarial Networks" (ICLR); Gouk, Frank, Pfahringer & Cree 2021,
"Regularisation of neural networks by enforcing Lipschitz continuity".
"""

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Args, RealScalarLike, Vector
from .._fields._activation import activation_lipschitz as _activation_lipschitz
from .._fields.base import AbstractVectorField
from .._fields.mlp import MLPField
from .._models.scaled import ScaledResidualNet
from .._validation import (
    check_float_array,
    check_positive_float,
    check_real,
    check_state_shape,
)


# `jnp.linalg.norm(W, 2)` is the top singular value from a backward-stable SVD: its
# relative error is a small multiple of `n eps`. Dividing by `(1 + _ROUNDING n eps)`
# times it keeps the normalised norm at most 1 despite that rounding.
_ROUNDING = 8.0


def _normalise(weight: Array) -> Array:
    """`weight / ((1 + 8 n eps) ||weight||_2)`; a zero matrix stays zero."""
    sigma = jnp.linalg.norm(weight, ord=2)
    margin = 1.0 + _ROUNDING * max(weight.shape) * float(jnp.finfo(weight.dtype).eps)
    safe = jnp.where(sigma > 0, sigma * margin, 1.0)
    return weight / safe


class SpectralNormMLPField(AbstractVectorField):
    """An MLP vector field on `(dim,)` whose Lipschitz constant in `y` is at most
    `bound`, whatever its weights: every linear map is divided by its spectral norm
    and the output is scaled by `bound / Lip(act)^depth`, so
    `Lip(F) <= prod_l ||W_l / ||W_l||_2||_2 Lip(act)^depth bound / Lip(act)^depth
    <= bound` (Miyato et al. 2018). Training moves the raw weights, never the bound.

    The spectral norms are exact (`jnp.linalg.norm(W, 2)`, one SVD per layer per
    call, and divided with a rounding margin of `8 n eps`) rather than power-iteration
    estimates as in `eqx.nn.SpectralNorm`: a power-iteration estimate `u^T W v` is a
    *lower* bound on `||W||_2` (and a stale one, carried as state, after an optimiser
    step), so dividing by it can leave `||W / sigma||_2 > 1` and the bound would hold
    only approximately. For the widths of a vector field (tens to hundreds) the SVDs
    are cheap; before many evaluations with fixed weights (a long adaptive solve),
    [`contdepth.SpectralNormMLPField.as_mlp_field`][] materialises the normalised
    weights once.

    With `time_dependent=True` only the `y`-columns of the first layer are normalised
    (the bound is uniform in `t`; `t` enters freely).
    """

    mlp: eqx.nn.MLP
    dim: int = eqx.field(static=True)
    bound: float = eqx.field(static=True)
    time_dependent: bool = eqx.field(static=True)
    activation_lipschitz: float = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        width: int,
        depth: int,
        *,
        bound: float = 1.0,
        activation: Callable = jax.nn.tanh,
        time_dependent: bool = False,
        activation_lipschitz: float | None = None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `dim`: size of the state.
        - `width`: size of each hidden layer.
        - `depth`: number of hidden layers (`depth + 1` linear maps).
        - `bound`: the Lipschitz bound `> 0` that `F(t, .)` satisfies for every `t`
            and every value of the weights.
        - `activation`: the hidden nonlinearity (its `sup |act'|` must be known or
            given, and positive).
        - `time_dependent`: whether `t` is fed to the network as an extra input.
        - `activation_lipschitz`: `sup |act'|`, for activations contdepth does not know.
        - `key`: a `jax.random.PRNGKey` for the initial (raw) weights.
        """
        # MLPField does the argument checks and builds the raw network.
        raw = MLPField(
            dim,
            width,
            depth,
            activation=activation,
            time_dependent=time_dependent,
            activation_lipschitz=activation_lipschitz,
            key=key,
        )
        self.bound = check_positive_float("bound", bound)
        lip = _activation_lipschitz(raw.mlp.activation, raw.activation_lipschitz)
        if lip <= 0:
            raise ValueError(
                f"`activation` has Lipschitz constant {lip}: a "
                "constant activation cannot be scaled to a bound. Use e.g. jax.nn.tanh."
            )
        self.mlp, self.dim, self.time_dependent = raw.mlp, raw.dim, raw.time_dependent
        self.activation_lipschitz = lip

    def normalised_mlp(self) -> eqx.nn.MLP:
        """The MLP with normalised weights actually evaluated by `__call__`."""
        layers = list(self.mlp.layers)
        scale = self.bound / self.activation_lipschitz ** (len(layers) - 1)
        new = []
        for i, layer in enumerate(layers):
            weight = layer.weight
            if i == 0 and self.time_dependent:
                weight = jnp.concatenate(
                    [_normalise(weight[:, : self.dim]), weight[:, self.dim :]], axis=1
                )
            else:
                weight = _normalise(weight)
            if i == len(layers) - 1:
                weight = weight * jnp.asarray(scale, weight.dtype)
            new.append(eqx.tree_at(lambda lin: lin.weight, layer, weight))
        return eqx.tree_at(lambda m: m.layers, self.mlp, tuple(new))

    def as_mlp_field(self) -> MLPField:
        """A plain [`contdepth.MLPField`][] with the current normalised weights (the
        same function; its own `lipschitz_bound()` is `<= bound` too). Normalise once,
        then solve many times."""
        field = MLPField(
            self.dim,
            1,
            1,
            time_dependent=self.time_dependent,
            activation=self.mlp.activation,
            activation_lipschitz=self.activation_lipschitz,
            key=jax.random.PRNGKey(0),
        )
        return eqx.tree_at(lambda f: f.mlp, field, self.normalised_mlp())

    def __call__(self, t: RealScalarLike, y: Vector, args: Args = None) -> Vector:
        if self.time_dependent:
            y_in = jnp.concatenate([y, jnp.reshape(t, (1,)).astype(y.dtype)])
        else:
            y_in = y
        return self.normalised_mlp()(y_in).astype(y.dtype)

    def check_state(self, y, name: str = "y") -> None:
        check_float_array(name, y)
        check_state_shape(name, y, (self.dim,), f"SpectralNormMLPField(dim={self.dim})")

    def lipschitz_bound(self) -> Float[Array, ""]:
        """`prod_l ||W_l||_2 Lip(act)^depth` of the normalised weights, computed (not
        assumed): at most `bound`."""
        mlp = self.normalised_mlp()
        out = jnp.asarray(1.0)
        for i, layer in enumerate(mlp.layers):
            weight = layer.weight
            if i == 0 and self.time_dependent:
                weight = weight[:, : self.dim]
            out = out * jnp.linalg.norm(weight, ord=2)
        return out * self.activation_lipschitz ** (len(mlp.layers) - 1)


def nonexpansive_residual_net(
    field_or_fields: SpectralNormMLPField | Sequence[SpectralNormMLPField],
    num_layers: int,
    *,
    beta: float = 0.5,
) -> ScaledResidualNet:
    """The scaled residual network `y_{l+1} = (1 - beta) y_l + alpha f_l(l, y_l)` on
    spectrally normalised fields, with `alpha = (1 - |1 - beta|) / max_l bound_l`:
    every block has Lipschitz constant `|1 - beta| + alpha Lip(f_l) <= 1`.

    Unlike `cd.ScaledResidualNet(..., alpha="nonexpansive")`, whose alpha is computed
    from the weights at construction, alpha here comes from the fields' *declared*
    bounds, which hold for all weights: the network stays non-expansive while the
    weights train. Keep alpha itself out of the optimiser (e.g. `optax.masked`), as it
    is an array leaf.

    Reference: Miyato et al. 2018; Gouk et al. 2021.

    **Arguments:**

    - `field_or_fields`: one `cd.SpectralNormMLPField` (tied) or `num_layers` of them.
    - `num_layers`: depth `N >= 1`.
    - `beta`: skip damping, `0 < beta < 2` (the skip must be contractive to leave
        room for the branch).

    **Returns:**

    A `cd.ScaledResidualNet`.
    """
    fields = (
        list(field_or_fields)
        if isinstance(field_or_fields, Sequence)
        else [field_or_fields]
    )
    for i, f in enumerate(fields):
        if not isinstance(f, SpectralNormMLPField):
            raise TypeError(
                f"`field_or_fields` must hold `cd.SpectralNormMLPField`s (whose bound "
                f"holds for all weights), got {type(f).__name__} at index {i}. For "
                "other fields use `cd.ScaledResidualNet(..., alpha='nonexpansive')`."
            )
    beta = check_real("beta", beta)
    margin = 1.0 - abs(1.0 - beta)
    if margin <= 0:
        raise ValueError(
            f"`beta` must satisfy 0 < beta < 2 (so |1 - beta| < 1), got beta={beta}."
        )
    alpha = margin / max(f.bound for f in fields)
    return ScaledResidualNet(field_or_fields, num_layers, alpha=alpha, beta=beta)
