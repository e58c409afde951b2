import lineax as lx

from .._custom_types import Args, State
from ._common import check_model_and_state, flat_map, with_autodiff_mode


def jacobian_operator(
    model, y: State, *, args: Args = None
) -> lx.JacobianLinearOperator:
    """The Jacobian `d model(y) / dy` as a matrix-free `lineax` linear operator.

    Nothing of size `d x d` is formed: `op.mv(v)` is one Jacobian-vector product
    (`jax.jvp`) and `op.transpose().mv(u)` one vector-Jacobian product (`jax.vjp`).
    Use `lineax.linearise(op)` to cache the forward pass for repeated products, as
    [`contdepth.extreme_singular_values`][] does.

    The operator acts on *flattened* states, like [`contdepth.jacobian`][]:
    `op.as_matrix()` equals `cd.jacobian(model, y)`.

    **Arguments:**

    - `model`: any callable `model(y, args) -> state`.
    - `y`: the state at which to linearise.
    - `args`: forwarded to the model.

    **Returns:**

    A `lineax.JacobianLinearOperator` with input and output structure
    `ShapeDtypeStruct((d,), y.dtype)`.

    A [`contdepth.NeuralODE`][] is wrapped with `diffrax.DirectAdjoint()` (which
    supports both jvp and vjp) when its own adjoint supports only one of them.
    """
    check_model_and_state(model, y, args=args)
    model = with_autodiff_mode(model, "both")
    fn, y_flat, _ = flat_map(model, y, args)
    return lx.JacobianLinearOperator(lambda x, _: fn(x), y_flat, None)
