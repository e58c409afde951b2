import abc

import equinox as eqx
from jaxtyping import Array, Float

from .._custom_types import Args, RealScalarLike, State


class AbstractVectorField(eqx.Module):
    """A vector field `F(t, y, args) -> dy/dt` acting on one state.

    The signature is diffrax's, so the same object goes into
    [`contdepth.EulerResNet`][] (forward-Euler steps: a ResNet) and into
    `diffrax.ODETerm` / [`contdepth.NeuralODE`][] (an adaptive solve: its continuous
    limit) unchanged.

    Subclasses implement `__call__`, `check_state` and `lipschitz_bound`.
    """

    @abc.abstractmethod
    def __call__(self, t: RealScalarLike, y: State, args: Args = None) -> State:
        """**Arguments:**

        - `t`: scalar time (the layer's depth, `t_k = k h`).
        - `y`: one state (no batch axis).
        - `args`: any PyTree passed through by the model; unused by the built-in fields.

        **Returns:**

        `dy/dt`, an array of the same shape and dtype as `y`.
        """

    @abc.abstractmethod
    def check_state(self, y: State, name: str = "y") -> None:
        """Raise a `ValueError` naming `name` if `y` is not a state this field accepts.

        Runs at trace time (shapes are static), so it is free under `jit`.
        """

    @abc.abstractmethod
    def lipschitz_bound(self) -> Float[Array, ""]:
        """An upper bound on the Lipschitz constant of `y -> F(t, y, args)`, uniform in
        `t`, computed from the weights (spectral norms). `inf` where none exists.

        Used for the Grönwall bound `||dy_N/dy_0|| <= (1 + hL)^N <= exp(LT)` and for
        the provably non-expansive [`contdepth.ScaledResidualNet`][].
        """
