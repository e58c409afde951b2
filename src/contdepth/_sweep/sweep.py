import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import equinox as eqx
import jax.random as jr
import numpy as np
from jaxtyping import PRNGKeyArray

from .._custom_types import Args, State
from .._distributed.mesh import resolve_mesh, shard_batch
from .._fields.protocol import check_field_state
from .._jacobian._common import check_choice
from .._models.base import AbstractDepthModel, check_model_state
from .._optional import progress_bar as tqdm
from .._validation import (
    check_bool,
    check_callable,
    check_float_array,
    check_key,
    check_positive_float,
)
from .legacy import legacy_families
from .measure import Measure
from .record import Table, worst_case
from .reference import measure_reference
from .result import DepthSweep


DEFAULT_STEPS = tuple(2**i for i in range(11))  # 1, 2, 4, ..., 1024
#: Above this state size the sweep goes matrix-free (`method="auto"`).
DENSE_LIMIT = 1024


def check_steps(steps) -> tuple[int, ...]:
    """`steps` must be a non-empty sequence of distinct positive integers; returned
    sorted."""
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence | np.ndarray):
        raise TypeError(
            "`steps` must be a sequence of positive integers such as (1, 2, 4, 8), got "
            f"{steps!r}."
        )
    out = []
    for s in list(steps):
        if isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 1:
            raise ValueError(
                f"`steps` must hold positive integers (depths N >= 1), got {s!r} in "
                f"steps={list(steps)!r}."
            )
        out.append(int(s))
    if not out:
        raise ValueError(
            "`steps` must hold at least one depth N, got an empty sequence."
        )
    if len(set(out)) != len(out):
        raise ValueError(f"`steps` must not repeat a depth, got {out}.")
    return tuple(sorted(out))


def _check_states(y, batched: bool, mesh):
    """The states as a batch `(B, *state)`, sharded over `mesh` when given."""
    check_float_array("y", y)
    if batched and (y.ndim < 1 or y.shape[0] == 0):
        raise ValueError(
            f"`y` must be a non-empty batch (B, *state) when batched=True, got shape "
            f"{tuple(y.shape)}."
        )
    ys = y if batched else y[None]
    mesh = resolve_mesh(mesh)
    if mesh is not None:
        if not batched:
            raise ValueError(
                "`mesh` shards a batch of states: pass `y` of shape (B, *state) with "
                "batched=True, got batched=False."
            )
        ys = shard_batch(ys, mesh, name="y")
    return ys, mesh


def _check_families(families) -> dict[str, Callable]:
    if not families:
        raise ValueError("`families` must hold at least one depth family, got none.")
    for name, family in families.items():
        if not isinstance(name, str):
            raise TypeError(f"`families` must be keyed by names (str), got {name!r}.")
        check_callable(f"families[{name!r}]", family)
    return dict(families)


def _check_model(family: str, model, y, args, name: str) -> None:
    """`model` (a family's model) must map the state `y` to a state of its shape."""
    if not callable(model):
        raise TypeError(
            f"Depth family {family!r} returned a {type(model).__name__}, not a model: "
            f"a family maps a depth N to a callable `model(y, args) -> y_out`."
        )
    check_model_state(model, y, name, args)  # a contdepth model also checks its field
    field = getattr(model, "field", None)
    if field is not None and not isinstance(model, AbstractDepthModel):
        # A user's model with a field: the field's own message is the most precise.
        check_field_state(field, y, args, name)
    out = eqx.filter_eval_shape(model, y, args)
    if not hasattr(out, "shape") or (out.shape, out.dtype) != (y.shape, y.dtype):
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"Depth family {family!r}: its model maps a state of shape "
            f"{tuple(y.shape)} and dtype {y.dtype} to {got}; the sweep needs a square "
            "Jacobian: `model(y, args)` of the state's shape and dtype."
        )


def _check_compare(compare, families) -> tuple[str, ...]:
    if compare is None:
        return (next(iter(families)),)
    if compare == "all":
        return tuple(families)
    names = (compare,) if isinstance(compare, str) else tuple(compare)
    for name in names:
        if name not in families:
            raise ValueError(
                f"`compare` must name families from {list(families)} (or be 'all'), "
                f"got {name!r}."
            )
    return names


def _first(families, capability: str) -> Any:
    """The first family having the optional capability, else `None`."""
    for family in families.values():
        if callable(getattr(family, capability, None)):
            return family
    return None


def _model_at(family, num_steps: int, traced: bool):
    if traced and callable(getattr(family, "traced_depth", None)):
        return family.traced_depth(num_steps)
    return family(num_steps)


def _sweep_families(families, steps, measure, reference, compare, key, progress):
    """Measure every family at every depth; the batch reduced to the worst case."""
    table = Table(families)
    # A traced depth compiles once for every N; loops under a mesh stay static scans.
    traced = measure.method == "dense" and measure.mesh is None
    bar = tqdm(
        total=len(steps) * len(families),
        desc="depth sweep",
        disable=not progress,
        leave=False,
    )
    for i, n in enumerate(steps):
        key_n = jr.fold_in(key, i)
        bar.set_postfix(N=n)
        for name, family in families.items():
            ref = reference if name in compare else None
            model = _model_at(family, n, traced)
            table.add(name, worst_case(measure(model, ref, key_n)))
            get_bounds: Callable[[int], Any] | None = getattr(family, "bounds", None)
            bounds = get_bounds(n) if callable(get_bounds) else None
            if bounds is not None:
                table.add(name, {"upper_bound": bounds[0], "lower_bound": bounds[1]})
            bar.update()
    bar.close()
    return table.arrays()


def _resolve(families, horizon, reference, baselines, ode, ys, key):
    """`(families, horizon, reference, meta)` of the new call (a dict of families) or
    of the original one (`field_or_model`, `baselines`, `ode`)."""
    if isinstance(families, Mapping):
        if baselines is not True or ode is not None:
            raise TypeError(
                "`baselines` and `ode` belong to the original call "
                "`depth_sweep(field_or_model, y, ...)`; with a dict of families add "
                "baseline families to the dict and pass the reference as `reference=`."
            )
        return _check_families(families), horizon, reference, {}
    if ode is not None and reference is not None:
        raise TypeError("Pass the reference as `reference=` or `ode=`, not both.")
    families, horizon, label, model_ode, note = legacy_families(
        families,
        horizon=horizon,
        baselines=baselines,
        vector_state=ys.ndim == 2,
        dim=int(ys[0].size),
        key=key,
    )
    if reference is None:
        reference = model_ode if ode is None else ode
    return families, horizon, reference, {"model": label, "baselines_note": note}


def depth_sweep(
    families: Mapping[str, Callable] | Callable,
    y: State,
    *,
    horizon: float | None = None,
    steps: Sequence[int] = DEFAULT_STEPS,
    reference: Callable | None = None,
    compare: str | Sequence[str] | None = None,
    batched: bool = False,
    method: Literal["auto", "dense", "matrix_free"] = "auto",
    key: PRNGKeyArray | None = None,
    args: Args = None,
    progress: bool = True,
    mesh=None,
    baselines: bool = True,
    ode: Callable | None = None,
) -> DepthSweep:
    """Sweep the depth `N` of families of models and record the spectrum of the
    end-to-end Jacobian `J_N = dy_N/dy_0` at every `N`, against a reference model.

    A depth family is any callable `N -> model`, a model any single-sample callable
    `model(y, args) -> y_out` with a square Jacobian; [`contdepth.families`][] holds
    the built-in ones. Families may expose optional capabilities, which the sweep
    discovers: `limit(dtype)` (the continuous limit: the default reference),
    `bounds(N)` (a priori `(upper, lower)` bounds on `σ_max`, `σ_min`: columns
    `upper_bound`, `lower_bound`), `lipschitz()` (the `L` in the header) and
    `traced_depth(N)` (one compile for every `N`).

    For an Euler family of a field `F` with Lipschitz bound `L`, Grönwall gives
    `σ_max(J_N) <= (1 + hL)^N <= exp(LT)` and `σ_min(J_N) >= (1 - hL)^N` when `hL < 1`:
    the spectrum stays bounded for every `N`, and `J_N -> J_ode` at rate `O(1/N)`.

    The original call `depth_sweep(field_or_model, y, horizon=T, baselines=True,
    ode=None)` still works: it sweeps the field's Euler family `"euler"` against the
    tight-tolerance Neural ODE, with the baselines `"unscaled"` (`h = 1`), `"plain"`,
    `"branch_1/N"` and `"branch_1/sqrt(N)"` (see [`contdepth.families`][]; the last
    three need vector states). There `field_or_model` is a vector field (any callable
    `f(t, y, args)`), or an [`contdepth.EulerResNet`][] / [`contdepth.NeuralODE`][]
    whose field and horizon are used (a `NeuralODE` is also the reference), or a
    [`contdepth.MomentumResNet`][] / [`contdepth.ReversibleResNet`][] swept itself in
    the `"euler"` slot (`meta["model"]` names it) against the ODE it discretises.

    **Arguments:**

    - `families`: a dict `{name: family}` (the order is the table's order), or, in the
        original call, `field_or_model`.
    - `y`: one state, or a batch `(B, *state)` with `batched=True`; batch results are
        reduced to the worst case (largest `σ_max`, errors, cond, bounds; smallest
        `σ_min`).
    - `horizon`: `T > 0`, recorded for the `h = T/N` column; default the first family's
        `horizon` attribute, if any. Required by the original call for a bare field.
    - `steps`: the depths `N` (default `1, 2, 4, …, 1024`).
    - `reference`: any model; default the `limit` of the first family that has one
        (for an Euler family: the Neural ODE with tolerances tight for the dtype,
        `rtol = 1e-10, atol = 1e-12` in float64, `1e-6, 1e-8` in float32, Tsit5). If
        no family has a limit and none is given there are no reference columns.
    - `compare`: which families get the columns `jac_rel_err = ‖J_N − J_ref‖₂ /
        ‖J_ref‖₂` and `out_rel_err = ‖y_N − y_ref‖ / ‖y_ref‖`: a name, a sequence of
        names, or `"all"`; default the first family.
    - `batched`: whether `y` carries a leading batch axis.
    - `method`: `"dense"` (`jax.jacfwd` + SVD), `"matrix_free"` (Golub–Kahan–Lanczos
        on jvp/vjp, see [`contdepth.extreme_singular_values`][]; the rows then carry
        error bounds `sigma_max_bound`, `sigma_min_bound`, `jac_rel_err_bound`) or
        `"auto"` (dense up to `d = 1024`).
    - `key`: PRNG key for the Lanczos start vectors (and the original call's random
        baselines); default `jax.random.PRNGKey(0)`.
    - `args`: forwarded to the models.
    - `progress`: show a progress bar.
    - `mesh`: `None`, `"auto"` or a one-axis `jax.sharding.Mesh`
        ([`contdepth.make_mesh`][]): with `batched=True`, the states are split over the
        devices (their number must divide `B`) and every Jacobian is computed where its
        state lives; the reference is solved on one device. Results equal the
        unsharded sweep.
    - `baselines`, `ode`: original call only: whether to add the baseline families,
        and the reference Neural ODE (same as `reference`).

    **Returns:**

    A [`contdepth.DepthSweep`][] with `.to_markdown()`, `.to_json()` and `.plot()`.
    """
    steps = check_steps(steps)
    batched = check_bool("batched", batched)
    check_choice("method", method, ("auto", "dense", "matrix_free"))
    key = jr.PRNGKey(0) if key is None else check_key("key", key)
    if horizon is not None:
        horizon = check_positive_float("horizon", horizon)
    ys, mesh = _check_states(y, batched, mesh)
    y0 = ys[0]
    families, horizon, reference, meta = _resolve(
        families, horizon, reference, baselines, ode, ys, key
    )
    for name, family in families.items():
        _check_model(name, family(steps[0]), y0, args, "y[0]" if batched else "y")
    if horizon is None:
        horizon = getattr(next(iter(families.values())), "horizon", None)
    explicit_compare = compare is not None
    compare = _check_compare(compare, families)
    if method == "auto":
        method = "dense" if y0.size <= DENSE_LIMIT else "matrix_free"
    measure = Measure(method, ys, args, mesh)
    k_ref, _, _, k_lanczos = jr.split(key, 4)
    if reference is None and (limit := _first(families, "limit")) is not None:
        reference = limit.limit(ys.dtype)
    if reference is None and explicit_compare:
        raise ValueError(
            "`compare` needs a reference: pass `reference=` (any model), or include a "
            "family with a `limit`, e.g. `cd.families.euler(field, horizon)`."
        )
    if reference is not None:
        check_callable("reference", reference)
    ref = None if reference is None else measure_reference(reference, measure, k_ref)
    compare = () if ref is None else compare
    table = _sweep_families(families, steps, measure, ref, compare, k_lanczos, progress)
    lip = _first(families, "lipschitz")
    return DepthSweep(
        steps=steps,
        horizon=horizon,
        dim=int(y0.size),
        num_states=int(ys.shape[0]),
        lipschitz=math.inf if lip is None else lip.lipschitz(),
        families=table,
        reference={} if ref is None else ref.summary,
        meta={**meta, **_meta(ys, method, mesh, ref, compare, families)},
    )


def _meta(ys, method, mesh, ref, compare, families) -> dict:
    model = None if ref is None else ref.model
    meta = {
        "dtype": str(ys.dtype),
        "method": method,
        "devices": 1 if mesh is None else int(mesh.devices.size),
        "compare": list(compare) if ref is not None else [],
        "reference": None if model is None else type(model).__name__,
    }
    if model is not None and hasattr(model, "solver"):
        meta["ode_solver"] = type(model.solver).__name__
        meta["ode_rtol"] = getattr(model, "rtol", None)
        meta["ode_atol"] = getattr(model, "atol", None)
    return meta
