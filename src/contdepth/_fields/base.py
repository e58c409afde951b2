import abc

import equinox as eqx

from .._custom_types import Args, RealScalarLike, State


class AbstractVectorField(eqx.Module):
    """A vector field `F(t, y, args) -> dy/dt` acting on one state.

    The signature is diffrax's, so the same object goes into
    [`contdepth.EulerResNet`][] (forward-Euler steps: a ResNet) and into
    `diffrax.ODETerm` / [`contdepth.NeuralODE`][] (an adaptive solve: its continuous
    limit) unchanged.

    Subclassing is optional: contdepth accepts any callable `f(t, y, args)` as a field
    (a function, `functools.partial`, any `eqx.Module`), as `diffrax.ODETerm` does.
    Subclasses implement `__call__` and may add the optional capabilities that
    contdepth discovers (see `contdepth/_fields/protocol.py`):

    - `check_state(y, name)`: raise a `ValueError` naming `name` if `y` is not a state
        this field accepts (runs at trace time, on shapes only);
    - `lipschitz_bound()`: an upper bound on the Lipschitz constant of
        `y -> F(t, y, args)`, uniform in `t` (see [`contdepth.lipschitz_bound`][]);
    - `jump_times(dtype)`: the times at which the field is discontinuous in `t`.
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
