"""What contdepth asks of a vector field: only that it be callable as `f(t, y, args)`.

Everything else is an optional capability, discovered rather than demanded (as
`diffrax.ODETerm` accepts any callable):

- `check_state(y, name)`: a field-specific input check with a tailored message (the
    built-in fields have one). Without it, one `jax.eval_shape` of the field checks that
    `dy/dt` has the state's shape and dtype.
- `lipschitz_bound()`: an upper bound on `Lip(y -> f(t, y, args))`, uniform in `t`.
    Without it the bound is `inf` ([`contdepth.lipschitz_bound`][]).
- `jump_times(dtype)`: times at which the field is discontinuous in `t` (e.g.
    [`contdepth.PiecewiseField`][]); adaptive solves step to them exactly.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Args, State
from .._validation import check_float_array


class _Unknown:
    """`args` were not given: skip the checks that need to call the field."""

    def __repr__(self):
        return "<args unknown>"


#: Default for `check_state(..., args=ARGS_UNKNOWN)`.
ARGS_UNKNOWN = _Unknown()


def _describe(field) -> str:
    name = getattr(field, "__name__", None) or type(field).__name__
    return name if name != "<lambda>" else "lambda"


def check_field(name: str, field):
    """`field` must be callable as `field(t, y, args)`; returns it unchanged."""
    # A depth model is `model(y, args)`: a common slip is passing one as a field.
    from .._models.base import AbstractDepthModel

    if isinstance(field, AbstractDepthModel):
        raise TypeError(
            f"`{name}` must be a vector field `f(t, y, args) -> dy/dt`, got the depth "
            f"model {type(field).__name__} (which maps `y -> y_out`). Pass its field, "
            f"e.g. `model.field`."
        )
    if not callable(field):
        raise TypeError(
            f"`{name}` must be a vector field: any callable `f(t, y, args) -> dy/dt` (a "
            f"function, `functools.partial`, an `eqx.Module` or a contdepth field such "
            f"as `cd.MLPField`), got {type(field).__name__}."
        )
    return field


def lipschitz_bound(field) -> Float[Array, ""]:
    """An upper bound on the Lipschitz constant of `y -> field(t, y, args)`, uniform in
    `t`: the field's own `lipschitz_bound()` (from its weights' spectral norms, for the
    built-in fields) where it has one, else `inf` (nothing is known).

    It enters the Grönwall bounds `||dy_N/dy_0|| <= (1 + hL)^N <= exp(LT)` of
    [`contdepth.depth_sweep`][] (shown as "n/a" when `L = inf`) and
    `ScaledResidualNet(alpha="nonexpansive")` (which refuses an infinite bound).

    **Arguments:**

    - `field`: any vector field `f(t, y, args)`.

    **Returns:**

    A scalar array `L >= 0`, possibly `inf`.
    """
    check_field("field", field)
    bound = getattr(field, "lipschitz_bound", None)
    if not callable(bound):
        return jnp.asarray(jnp.inf)
    return jnp.asarray(bound())


def jump_times(field, dtype) -> tuple[float, ...]:
    """The field's discontinuity times in `t` (its `jump_times(dtype)`), or `()`."""
    fn = getattr(field, "jump_times", None)
    return tuple(fn(dtype)) if callable(fn) else ()


def check_field_state(field, y: State, args: Args = ARGS_UNKNOWN, name: str = "y"):
    """Check that `y` is a floating-point state the field accepts and that
    `field(t, y, args)` returns an array of the state's shape and dtype.

    Runs at trace time on shapes only (`y` may be a `jax.ShapeDtypeStruct`), so it
    costs nothing under `jit`. With `args` unknown only the field's own `check_state`
    (if any) runs.
    """
    check_float_array(name, y)
    own = getattr(field, "check_state", None)
    if callable(own):
        own(y, name)
    if args is ARGS_UNKNOWN:
        return
    state = jax.ShapeDtypeStruct(tuple(y.shape), y.dtype)
    t = jax.ShapeDtypeStruct((), y.dtype)
    try:
        out = eqx.filter_eval_shape(field, t, state, args)
    except Exception as e:
        kind = TypeError if isinstance(e, TypeError) else ValueError
        raise kind(
            f"Calling the vector field {_describe(field)} as `f(t, {name}, args)` with "
            f"`{name}` of shape {tuple(y.shape)} and dtype {y.dtype} failed: {e}"
        ) from e
    if not hasattr(out, "shape") or tuple(out.shape) != tuple(y.shape) or (
        out.dtype != y.dtype
    ):
        got = (
            f"shape {tuple(out.shape)} and dtype {out.dtype}"
            if hasattr(out, "shape")
            else f"a {type(out).__name__}"
        )
        raise ValueError(
            f"The vector field {_describe(field)} returned {got} for `{name}` of shape "
            f"{tuple(y.shape)} and dtype {y.dtype}: `f(t, y, args)` must return `dy/dt` "
            f"with the state's shape and dtype (cast with `.astype(y.dtype)` if its "
            f"weights have another dtype)."
        )
