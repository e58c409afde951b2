"""The sweep's reference: any model (by default a family's continuous limit, e.g. a
tight-tolerance Neural ODE) measured once, against which the compared families'
Jacobians and outputs are measured at every depth."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .._jacobian._common import with_autodiff_mode
from .measure import dense_reference, matrix_free_point, Measure, outputs, solver_steps


@dataclasses.dataclass(frozen=True)
class Reference:
    """A measured reference model.

    - `model`: the reference model.
    - `jac`: its Jacobian per state (dense method), else `None`.
    - `operator`: the model, differentiable in both modes (matrix-free method), else
        `None`.
    - `out`: its output per state.
    - `norm`: `(σ_max, Lanczos bound)` per state (matrix-free method), else `None`.
    - `summary`: the scalars recorded in `DepthSweep.reference`.
    """

    model: object
    jac: jax.Array | None
    operator: object
    out: jax.Array
    norm: tuple[jax.Array, jax.Array] | None
    summary: dict


def no_throw(model):
    """`model` with failures returned as NaN instead of raised, where it can (a
    [`contdepth.NeuralODE`][]: `replace(throw=False)`)."""
    replace = getattr(model, "replace", None)
    if getattr(model, "throw", False) and callable(replace):
        return replace(throw=False)
    return model


def measure_reference(model, measure: Measure, key) -> Reference:
    """Measure `model` at every state, on one device.

    Adaptive solves (`while` loops) run on one device: XLA:CPU with several host
    devices was seen to deadlock intermittently on sharded programs containing them.
    """
    if measure.mesh is not None:
        # `eqx.error_if` host callbacks inside sharded programs can stall the CPU
        # runtime's collectives; solve without them and check the result on the host.
        model = no_throw(model)
    local, ys = measure.local(model), measure.ys_local
    bounds, jac, operator, norm, steps = {}, None, None, None, None
    # A Neural ODE: record its solver steps.
    has_solve = callable(getattr(model, "solve", None))
    if measure.method == "dense":
        # One compiled program: Jacobians, spectra, outputs (and solver steps).
        jac, sv, out, *steps = dense_reference(local, ys, measure.args, has_solve)
        smax, smin = np.asarray(sv[:, 0]), np.asarray(sv[:, -1])
        steps = steps[0] if has_solve else None
    else:
        point = matrix_free_point(local, ys, None, None, None, measure.args, key, None)
        smax, smin = np.asarray(point["sigma_max"]), np.asarray(point["sigma_min"])
        operator = with_autodiff_mode(model, "both")
        norm = (jnp.asarray(smax), jnp.asarray(point["sigma_max_bound"]))
        bounds = {
            name: float(np.max(point[name]))
            for name in ("sigma_max_bound", "sigma_min_bound")
        }
        bounds["converged"] = bool(np.all(point["converged"]))
        out = outputs(local, ys, measure.args)
        if has_solve:
            steps = solver_steps(local, ys, measure.args)
    if not np.all(np.isfinite(np.asarray(out))):
        raise RuntimeError(
            f"The reference model {type(model).__name__} gave a non-finite output (a "
            "failed Neural ODE solve with throw=False returns NaN). Pass `reference=` "
            "(legacy: `ode=`) a model that succeeds, e.g. `cd.NeuralODE(field, "
            "horizon, max_steps=..., rtol=..., atol=...)` with a larger `max_steps`, "
            "looser tolerances or a stiff solver."
        )
    summary = {
        "sigma_max": float(smax.max()),
        "sigma_min": float(smin.min()),
        "cond": float(np.max(smax / smin)),
    }
    if steps is not None:
        summary["num_steps"] = int(np.max(np.asarray(steps)))
    summary.update(bounds)
    return Reference(model, jac, operator, out, norm, summary)
