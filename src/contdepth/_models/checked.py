from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from .._validation import check_callable


def _inexact(x) -> bool:
    if isinstance(x, (float, complex)):
        return True
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)


def _all_finite(tree) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(tree) if _inexact(x)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves] or [True]))


def _describe(model) -> str:
    name = type(model).__name__
    num_steps = getattr(model, "num_steps", None)
    horizon = getattr(model, "horizon", None)
    if isinstance(num_steps, int) and isinstance(horizon, (int, float)):
        return (
            f"{name}(num_steps={num_steps}, horizon={horizon}) with step "
            f"h = T/N = {horizon / num_steps:g}"
        )
    if isinstance(horizon, (int, float)):
        return f"{name}(horizon={horizon})"
    return name


def _message(model) -> str:
    return (
        f"{_describe(model)} returned NaN or inf for a finite input. The forward pass "
        "overflowed (each step can multiply the state by up to 1 + h Lip(F)) or the "
        "weights hold NaN/inf. Try: a smaller step h = T/N (more steps over the same "
        "horizon, or a shorter horizon); fewer steps or layers; smaller weights; "
        "float64 (`jax.config.update('jax_enable_x64', True)`); or check the weights "
        "with `jnp.isfinite`."
    )


class Checked(eqx.Module):
    """A model that raises instead of returning NaN or inf for a finite input.

    The discrete depth models (`cd.EulerResNet`, `cd.PlainNet`, ...) have no
    data-dependent check in their forward pass, so they stay cheap under
    `jit`/`vmap`/`grad`; a finite input can still overflow to inf or NaN (e.g. an Euler
    step `h` far beyond the field's stability region). Wrapping them opts in to one
    check per call: if every floating input is finite and some floating output is not,
    `eqx.error_if` raises an `equinox.EquinoxRuntimeError` naming the model and what to
    change. Non-finite inputs pass through unchecked (NaN in, NaN out), as in the
    wrapped model. Under `jax.vmap` the check is per batch and raises if any sample
    fails.

    Built by [`contdepth.checked`][]; works on any callable model (a depth model, a
    `cd.Classifier`, a user's function) and composes with `jit`, `vmap` and `grad`.
    """

    model: Callable
    message: str = eqx.field(static=True)

    def __init__(self, model: Callable):
        """**Arguments:**

        - `model`: any callable, typically a depth model `model(y, args=None)`.
        """
        self.model = check_callable("model", model)
        self.message = _message(model)

    def __call__(self, *inputs, **kwargs):
        """**Arguments:** whatever the wrapped model takes, e.g. `(y, args=None)`.

        **Returns:**

        The wrapped model's output, unchanged when the check passes.
        """
        out = self.model(*inputs, **kwargs)
        failed = _all_finite((inputs, kwargs)) & ~_all_finite(out)
        return eqx.error_if(out, failed, self.message)


def checked(model: Callable) -> Checked:
    """Wrap `model` so that a finite input never yields a NaN or inf output silently:
    `checked(model)(y)` returns `model(y)`, or raises an `equinox.EquinoxRuntimeError`
    (also under `jit`) when `y` (and `args`) are finite but the output is not.

    **Arguments:**

    - `model`: any callable model, e.g. `cd.EulerResNet(...)` or a `cd.Classifier`.

    **Returns:**

    A [`contdepth.Checked`][] module wrapping `model` (a PyTree holding it, so it can be
    trained, saved and vmapped like the model).
    """
    return Checked(model)
