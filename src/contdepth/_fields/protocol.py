"""What contdepth asks of a vector field: only that it be callable as `f(t, y, args)`.

Everything else is an optional capability, discovered rather than demanded (as
`diffrax.ODETerm` accepts any callable):

- `check_state(y, name)`: a field-specific input check with a tailored message (the
    built-in fields have one). Without it, one `jax.eval_shape` of the field checks that
    `dy/dt` has the state's shape and dtype.
- `lipschitz_bound()`: an upper bound on `Lip(y -> f(t, y, args))`, uniform in `t`.
    Without it the bound is `inf` ([`contdepth.lipschitz_bound`][]).
- `jump_times(dtype)`: times at which the field is discontinuous in `t` (e.g.
    [`contdepth.PiecewiseField`][]); adaptive solves step to them exactly, and a
    fixed-step model whose step grid misses one warns (`StepStraddlesJumpWarning`).
- `horizon`: a positive number, the end `T` of the time span `[0, T]` the field is
    built for (e.g. `PiecewiseField(fields, horizon)`). A model over another horizon
    refuses the field at construction ([`field_horizon`][], [`check_field_horizon`][]).
"""

import math
import numbers
import os
import sys
import warnings
from collections.abc import Callable, Iterable

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
            f"`{name}` must be a vector field: any callable `f(t, y, args) -> dy/dt` "
            "(a "
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
    fn: Callable[..., Iterable[float]] | None = getattr(field, "jump_times", None)
    return tuple(fn(dtype)) if callable(fn) else ()


def check_field_state(
    field,
    y: State | jax.ShapeDtypeStruct,
    args: Args = ARGS_UNKNOWN,
    name: str = "y",
):
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
    if (
        not hasattr(out, "shape")
        or tuple(out.shape) != tuple(y.shape)
        or (out.dtype != y.dtype)
    ):
        got = (
            f"shape {tuple(out.shape)} and dtype {out.dtype}"
            if hasattr(out, "shape")
            else f"a {type(out).__name__}"
        )
        raise ValueError(
            f"The vector field {_describe(field)} returned {got} for `{name}` of shape "
            f"{tuple(y.shape)} and dtype {y.dtype}: `f(t, y, args)` must return "
            "`dy/dt` "
            f"with the state's shape and dtype (cast with `.astype(y.dtype)` if its "
            f"weights have another dtype)."
        )


class StepStraddlesJumpWarning(UserWarning):
    """A fixed-step model steps across a time where its field jumps (e.g.
    `EulerResNet(PiecewiseField(fields, T), num_steps, T)` with `num_steps` not a
    multiple of `len(fields)`), so some steps mix two pieces. Silence it when that is
    intended: `warnings.filterwarnings("ignore", category=cd.StepStraddlesJumpWarning)`.
    """


def field_horizon(field) -> float | None:
    """The horizon `T` a field declares through a numeric `horizon` attribute, or
    `None` (most fields hold for all `t`)."""
    horizon = getattr(field, "horizon", None)
    if isinstance(horizon, numbers.Real) and not isinstance(horizon, bool):
        return float(horizon)
    return None


def check_field_horizon(name: str, field, model: str, horizon: float) -> None:
    """Raise `ValueError` if `field` declares a horizon other than the model's."""
    own = field_horizon(field)
    if own is None or math.isclose(own, horizon, rel_tol=1e-12, abs_tol=0.0):
        return
    described = f"{_describe(field)}(horizon={own})"
    if own < horizon:
        consequence = f"would reuse its last piece on [{own}, {horizon}]"
    else:
        consequence = f"would never reach its part on [{horizon}, {own}]"
    raise ValueError(
        f"{described} inside {model}(horizon={horizon}) {consequence}: `{name}` and "
        f"the model must share one horizon. Build the model with `horizon={own}`, or "
        f"the field with `horizon={horizon}`."
    )


def warn_if_steps_straddle_jumps(
    field, model: str, num_steps: int, horizon: float
) -> None:
    """Warn (`StepStraddlesJumpWarning`) when a fixed step `h = horizon / num_steps`
    does not land on the field's `jump_times`."""
    jumps = jump_times(field, jnp.float64)
    h = horizon / num_steps
    missed = [t for t in jumps if 0 < t < horizon and abs(t / h - round(t / h)) > 1e-6]
    if not missed:
        return
    pieces = getattr(field, "num_pieces", None)
    what = (
        f"{num_steps} steps over {_describe(field)} with {pieces} pieces: num_steps is "
        f"not a multiple of {pieces}"
        if isinstance(pieces, int)
        else f"{num_steps} steps over {_describe(field)}, whose jump at t = "
        f"{missed[0]:g} is not on the step grid h = {h:g}"
    )
    warnings.warn(
        f"{model}: {what}, so steps straddle {len(missed)} of its {len(jumps)} piece "
        "boundaries: such a step applies the piece active at its start over part of "
        "the next piece's "
        "interval, and the model is not the untied ResNet of the pieces. "
        "Pass a num_steps that is a multiple of the number of pieces, or silence this "
        "with `warnings.filterwarnings('ignore', "
        "category=cd.StepStraddlesJumpWarning)`.",
        StepStraddlesJumpWarning,
        stacklevel=_caller_stacklevel(),
    )


def _caller_stacklevel() -> int:
    """The `stacklevel` of the first frame outside contdepth and equinox (whose
    `Module` metaclass sits between a constructor and its caller)."""
    inside = (os.path.dirname(os.path.dirname(__file__)), os.path.dirname(eqx.__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    return level
