import diffrax
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Args
from .._fields.protocol import ARGS_UNKNOWN
from .._validation import check_bool, check_float_array
from .base import AbstractDepthModel
from .neural_ode import NeuralODE


def _check_augment(augment) -> int:
    if isinstance(augment, bool) or not isinstance(augment, int):
        raise TypeError(
            f"`augment` must be a Python int >= 0 (the number of zero coordinates "
            f"appended to the state), got {augment!r} of type "
            f"{type(augment).__name__}. Pass e.g. `augment=1`."
        )
    if augment < 0:
        raise ValueError(f"`augment` must be an int >= 0, got {augment}.")
    return augment


class AugmentedNeuralODE(AbstractDepthModel):
    """An augmented Neural ODE (ANODE): the state `x` of shape `(d,)` is padded with
    `augment = p` zeros, `z(0) = [x, 0_p]`, flowed by a [`contdepth.NeuralODE`][] on
    `R^(d+p)`, and `z(T)` is returned projected back to its first `d` coordinates
    (a depth model: `(d,) -> (d,)`), or whole (`keep_augmented=True`: `(d,) ->
    (d+p,)`, Dupont et al.'s linear readout on every coordinate).

    The flow of an ODE on `R^d` is a homeomorphism, so it cannot untangle e.g. a disc
    from a surrounding annulus; in `R^(d+p)` the same points can be lifted apart.
    With `augment=0` this is exactly the wrapped `NeuralODE`.

    The wrapped model is `self.ode` (its field must act on `(d+p,)` states); every
    diffrax option of `NeuralODE` applies. `self.lift(x)` is `z(0)`, so the full flow
    Jacobian at `x` is `cd.jacobian(model.ode, model.lift(x))`.

    Reference: Dupont, Doucet & Teh 2019, "Augmented Neural ODEs" (NeurIPS).
    """

    ode: NeuralODE
    augment: int = eqx.field(static=True)
    keep_augmented: bool = eqx.field(static=True)

    def __init__(self, ode: NeuralODE, augment: int, *, keep_augmented: bool = False):
        """**Arguments:**

        - `ode`: a [`contdepth.NeuralODE`][] whose field acts on states of shape
            `(d + augment,)`.
        - `augment`: the number `p >= 0` of zero coordinates appended to the input.
        - `keep_augmented`: return the whole final state `(d + p,)` instead of its
            first `d` coordinates.
        """
        if not isinstance(ode, NeuralODE):
            raise TypeError(
                "`ode` must be a `cd.NeuralODE` whose field acts on the augmented "
                f"state, e.g. `cd.NeuralODE(cd.MLPField(d + p, ...), T)`, got "
                f"{type(ode).__name__}."
            )
        self.ode = ode
        self.augment = _check_augment(augment)
        self.keep_augmented = check_bool("keep_augmented", keep_augmented)

    def lift(self, y: Float[Array, " d"]) -> Float[Array, " d+p"]:
        """The initial state `[y, 0_p]` of the augmented flow."""
        return jnp.concatenate([y, jnp.zeros(self.augment, y.dtype)])

    def check_state(self, y, name: str = "y", args: Args = ARGS_UNKNOWN) -> None:
        check_float_array(name, y, ndim=1)
        # A zero state of the lifted shape (the check reads shapes and dtypes only).
        lifted = jnp.zeros((y.shape[0] + self.augment,), y.dtype)
        self.ode.check_state(lifted, f"{name} padded with {self.augment} zeros", args)

    def _out(self, z, d: int):
        return z if self.keep_augmented else z[..., :d]

    def solve(
        self, y: Float[Array, " d"], args: Args = None, **kwargs
    ) -> diffrax.Solution:
        """The wrapped model's [`contdepth.NeuralODE.solve`][] from `lift(y)`: the
        `diffrax.Solution` on the augmented state `(d + p,)`, with its
        `stats["num_steps"]` (keyword arguments such as `saveat=` are forwarded)."""
        self.check_state(y, args=args)
        return self.ode.solve(self.lift(y), args, **kwargs)

    def __call__(self, y: Float[Array, " d"], args: Args = None) -> Array:
        """**Arguments:**

        - `y`: one state of shape `(d,)` (no batch axis).
        - `args`: forwarded to the field.

        **Returns:**

        `z(T)[:d]`, shape `(d,)`; with `keep_augmented=True` the whole `z(T)`,
        shape `(d + p,)`.
        """
        self.check_state(y, args=args)
        return self._out(self.ode(self.lift(y), args), y.shape[0])

    def trajectory(
        self, y: Float[Array, " d"], ts, args: Args = None
    ) -> Float[Array, "times out"]:
        """The (projected, unless `keep_augmented`) solution at the times `ts`,
        stacked along a new first axis."""
        self.check_state(y, args=args)
        return self._out(self.ode.trajectory(self.lift(y), ts, args), y.shape[0])
