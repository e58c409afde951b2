import math
from collections.abc import Sequence
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import PartitionSpec
from jaxtyping import PRNGKeyArray
from tqdm.auto import tqdm

from .._custom_types import Args, State
from .._distributed.mesh import batch_sharding, replicated, resolve_mesh, shard_batch
from .._fields.base import AbstractVectorField
from .._fields.coupled import CoupledField
from .._jacobian._common import check_choice, with_autodiff_mode
from .._jacobian.dense import jacobian
from .._jacobian.extreme import extreme_singular_values
from .._models.euler import EulerResNet
from .._models.momentum import MomentumResNet
from .._models.neural_ode import NeuralODE
from .._models.reversible import ReversibleResNet
from .._validation import check_bool, check_float_array, check_key, check_positive_float
from .baselines import random_stack
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
        raise ValueError("`steps` must hold at least one depth N, got an empty sequence.")
    if len(set(out)) != len(out):
        raise ValueError(f"`steps` must not repeat a depth, got {out}.")
    return tuple(sorted(out))


class _Difference(eqx.Module):
    # `y -> a(y) - b(y)`: its Jacobian is `J_a - J_b`, so the matrix-free spectral norm
    # of a difference of Jacobians is one more Lanczos run.
    a: eqx.Module
    b: eqx.Module

    def __call__(self, y, args=None):
        return self.a(y, args) - self.b(y, args)


def _masked_spectrum(jac):
    finite = jnp.all(jnp.isfinite(jac))
    s = jnp.linalg.svd(jnp.where(finite, jac, 0.0), compute_uv=False)
    smax = jnp.where(finite, s[0], jnp.inf)
    smin = jnp.where(finite, s[-1], jnp.nan)
    return smax, smin


def _per_sample(fn, mesh, *xs):
    """`vmap(fn)` over the batch; with a mesh, inside `shard_map`, so every device runs
    its own slice independently. (A vmapped adaptive solve under plain GSPMD would
    synchronise all devices at every solver step to evaluate the batched loop
    condition.)"""
    if mesh is None:
        return jax.vmap(fn)(*xs)
    spec = PartitionSpec(mesh.axis_names[0])
    return jax.shard_map(
        jax.vmap(fn), mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False
    )(*xs)


@eqx.filter_jit
def _dense_point(model, ys, ref_jac, ref_out, args, mesh=None):
    """Per state: sigma_max, sigma_min, ||J - J_ref||_2 / ||J_ref||_2, output error."""

    def one(y, jr_, yr):
        jac = jacobian(model, y, args=args)
        out = model(y, args)
        smax, smin = _masked_spectrum(jac)
        if jr_ is None:
            return smax, smin, jnp.nan, jnp.nan, jac
        dist = jnp.linalg.norm(jac - jr_, ord=2) / jnp.linalg.norm(jr_, ord=2)
        err = jnp.linalg.norm(out - yr) / jnp.linalg.norm(yr)
        return smax, smin, dist, err, jac

    return _per_sample(one, mesh, ys, ref_jac, ref_out)


def _matrix_free_point(model, ys, ref, ref_out, ref_norm, args, key, mesh=None):
    @eqx.filter_jit
    def run(model, ys, ref, ref_out, ref_norm, key):
        def one(y, yr, ref_norm, k):
            k1, k2 = jr.split(k)
            ext = extreme_singular_values(model, y, 1, key=k1, args=args)
            smax, smin = ext.largest[0], ext.smallest[0]
            if ref is None:
                return smax, smin, jnp.nan, jnp.nan, None
            diff = extreme_singular_values(
                _Difference(model, ref), y, 1, key=k2, which="largest", args=args
            ).largest[0] / ref_norm
            err = jnp.linalg.norm(model(y, args) - yr) / jnp.linalg.norm(yr)
            return smax, smin, diff, err, None

        return _per_sample(one, mesh, ys, ref_out, ref_norm, jr.split(key, ys.shape[0]))

    return run(model, ys, ref, ref_out, ref_norm, key)


def depth_sweep(
    field_or_model: AbstractVectorField | EulerResNet | NeuralODE,
    y: State,
    *,
    horizon: float | None = None,
    steps: Sequence[int] = DEFAULT_STEPS,
    baselines: bool = True,
    batched: bool = False,
    method: Literal["auto", "dense", "matrix_free"] = "auto",
    ode: NeuralODE | None = None,
    key: PRNGKeyArray | None = None,
    args: Args = None,
    progress: bool = True,
    mesh=None,
) -> DepthSweep:
    """Sweep the depth `N` of the Euler ResNet of one vector field with the horizon
    `T` fixed, and record the spectrum of the end-to-end Jacobian `J_N = dy_N/dy_0`
    against the flow Jacobian of the Neural ODE and against baselines.

    For the field `F` with Lipschitz bound `L` (from its weight norms), Grönwall gives
    `σ_max(J_N) <= (1 + hL)^N <= exp(LT)` and `σ_min(J_N) >= (1 - hL)^N` when `hL < 1`:
    the spectrum stays bounded for every `N`, and `J_N -> J_ode` at rate `O(1/N)`.
    The baselines show what happens otherwise:

    - `"unscaled"`: the same field with `h = 1` (`EulerResNet(F, N, horizon=N)`, the
        classic `y + F(y)` stack): the horizon grows with `N` and so can `σ_max` or
        `1/σ_min`, geometrically.
    - `"plain"`: a random tanh `PlainNet` of depth `N` (no skip): `σ_min -> 0`.
    - `"branch_1/N"`, `"branch_1/sqrt(N)"`: depth-varying i.i.d. random branches `f_k`
        scaled by `1/N` (ODE scaling: the random branches average out, `J -> I`) and by
        `1/√N` (the SDE scaling of Marion et al. 2022 / Cohen et al. 2021: a non-trivial
        random limit, still bounded).

    **Arguments:**

    - `field_or_model`: a vector field, or an [`contdepth.EulerResNet`][] /
        [`contdepth.NeuralODE`][] whose field (and horizon) is used. A
        [`contdepth.MomentumResNet`][] or [`contdepth.ReversibleResNet`][] is swept
        itself (same weights, `gamma`/`memory`, depth `N`) against the ODE it
        discretises (`x' = F(t, x)`, resp. `y1' = F_a(t, y2), y2' = F_b(t, y1)`), in
        the `"euler"` family's slot (`meta["model"]` names it; the Grönwall columns
        are then omitted, they bound the forward-Euler product only).
    - `y`: one state, or a batch `(B, *state)` with `batched=True`; batch results are
        reduced to the worst case (largest `σ_max`, errors, cond; smallest `σ_min`).
    - `horizon`: `T > 0`; default the model's horizon, required for a bare field.
    - `steps`: the depths `N` (default `1, 2, 4, …, 1024`).
    - `baselines`: also compute the baseline families (the plain and random-branch
        families need vector states `(d,)`).
    - `batched`: whether `y` carries a leading batch axis.
    - `method`: `"dense"` (`jax.jacfwd` + SVD), `"matrix_free"` (Golub–Kahan–Lanczos
        on jvp/vjp, see [`contdepth.extreme_singular_values`][]) or `"auto"` (dense up
        to `d = 1024`).
    - `ode`: the reference Neural ODE; default `NeuralODE(F, T)` with tolerances tight
        for the dtype (`rtol = 1e-10, atol = 1e-12` in float64, `1e-6, 1e-8` in
        float32), Tsit5.
    - `key`: PRNG key for the random baselines and Lanczos start vectors; default
        `jax.random.PRNGKey(0)`.
    - `args`: forwarded to the field.
    - `progress`: show a progress bar.
    - `mesh`: `None`, `"auto"` or a one-axis `jax.sharding.Mesh`
        ([`contdepth.make_mesh`][]): with `batched=True`, the states are split over the
        devices (their number must divide `B`) and every Jacobian is computed where its
        state lives. Results equal the unsharded sweep.

    **Returns:**

    A [`contdepth.DepthSweep`][] with `.to_markdown()`, `.to_json()` and `.plot()`.
    """
    main_label = "euler"
    if isinstance(field_or_model, EulerResNet | NeuralODE | MomentumResNet):
        field = field_or_model.field
        if horizon is None:
            horizon = field_or_model.horizon
        if ode is None and isinstance(field_or_model, NeuralODE):
            ode = field_or_model
    elif isinstance(field_or_model, ReversibleResNet):
        field = CoupledField(field_or_model.field_a, field_or_model.field_b)
        if horizon is None:
            horizon = field_or_model.horizon
    elif isinstance(field_or_model, AbstractVectorField):
        field = field_or_model
        if horizon is None:
            raise ValueError(
                "`horizon` is required when `field_or_model` is a bare vector field, got "
                "horizon=None. Pass e.g. horizon=1.0."
            )
    else:
        raise TypeError(
            "`field_or_model` must be a contdepth vector field, EulerResNet, NeuralODE, "
            f"MomentumResNet or ReversibleResNet, got {type(field_or_model).__name__}."
        )
    if isinstance(field_or_model, MomentumResNet):
        main_label = "momentum"
        gamma, memory = field_or_model.gamma, field_or_model.memory

        def at_depth(n, t):
            return MomentumResNet(field, n, t, gamma=gamma, memory=memory)
    elif isinstance(field_or_model, ReversibleResNet):
        main_label = "reversible"
        memory = field_or_model.memory

        def at_depth(n, t):
            return ReversibleResNet(field.field_a, field.field_b, n, t, memory=memory)
    else:

        def at_depth(n, t):
            return EulerResNet(field, n, t)
    horizon = check_positive_float("horizon", horizon)
    steps = check_steps(steps)
    baselines = check_bool("baselines", baselines)
    batched = check_bool("batched", batched)
    check_choice("method", method, ("auto", "dense", "matrix_free"))
    key = jr.PRNGKey(0) if key is None else check_key("key", key)
    check_float_array("y", y)
    ys = y if batched else y[None]
    if batched and (y.ndim < 1 or y.shape[0] == 0):
        raise ValueError(
            f"`y` must be a non-empty batch (B, *state) when batched=True, got shape "
            f"{tuple(y.shape)}."
        )
    for i in range(min(ys.shape[0], 1)):
        field.check_state(ys[i], "y[0]" if batched else "y")
    mesh = resolve_mesh(mesh)
    if mesh is not None:
        if not batched:
            raise ValueError(
                "`mesh` shards a batch of states: pass `y` of shape (B, *state) with "
                "batched=True, got batched=False."
            )
        ys = shard_batch(ys, mesh, name="y")
    dtype = ys.dtype
    d = int(np.prod(ys.shape[1:]))
    if method == "auto":
        method = "dense" if d <= DENSE_LIMIT else "matrix_free"
    if ode is None:
        tight = jnp.finfo(dtype).bits >= 64
        ode = NeuralODE(
            field,
            horizon,
            rtol=1e-10 if tight else 1e-6,
            atol=1e-12 if tight else 1e-8,
            max_steps=100_000,
        )
    if mesh is not None and ode.throw:
        # `eqx.error_if` host callbacks inside sharded programs can stall the CPU
        # runtime's collectives; solve without them and check the result on the host.
        ode = NeuralODE(
            ode.field, ode.horizon, solver=ode.solver, rtol=ode.rtol, atol=ode.atol,
            adjoint=ode.adjoint, max_steps=ode.max_steps, dt0=ode.dt0, throw=False,
        )
    lipschitz = float(field.lipschitz_bound())

    ref_norm = None

    # Adaptive solves (`while` loops) run on one device: XLA:CPU with several host
    # devices was seen to deadlock intermittently on sharded programs containing them.
    # Everything else (every depth N of every family) is split over the mesh.
    ys_local = ys if mesh is None else jax.device_put(ys, mesh.devices.flat[0])

    def measure(model, ref, ref_out, k, sharded=True):
        m = mesh if sharded else None
        z = ys if sharded else ys_local
        if mesh is not None:  # place every operand explicitly: no mixed placements
            place = replicated(mesh) if sharded else mesh.devices.flat[0]
            model = eqx.filter_shard(model, place)
            if sharded and ref is not None:
                if isinstance(ref, jax.Array):
                    ref = jax.device_put(ref, batch_sharding(mesh))
                else:
                    ref = eqx.filter_shard(ref, replicated(mesh))
                ref_out = jax.device_put(ref_out, batch_sharding(mesh))
        if method == "dense":
            smax, smin, dist, err, jac = _dense_point(model, z, ref, ref_out, args, m)
        else:
            smax, smin, dist, err, jac = _matrix_free_point(
                model, z, ref, ref_out, ref_norm, args, k, m
            )
        return np.asarray(smax), np.asarray(smin), np.asarray(dist), np.asarray(err), jac

    k_ode, k_plain, k_branch, k_lanczos = jr.split(key, 4)
    if method == "dense":
        _, _, _, _, ref_jac = measure(ode, None, None, k_ode, sharded=False)
        ref_sv = jax.vmap(lambda j: jnp.linalg.svd(j, compute_uv=False))(ref_jac)
        ref_smax, ref_smin = np.asarray(ref_sv[:, 0]), np.asarray(ref_sv[:, -1])
        ref = ref_jac
    else:
        ref_smax, ref_smin, _, _, _ = measure(ode, None, None, k_ode, sharded=False)
        ref = with_autodiff_mode(ode, "both")
        ref_norm = jnp.asarray(ref_smax)
    ref_out = eqx.filter_jit(lambda z: jax.vmap(lambda y_: ode(y_, args))(z))(ys_local)
    ode_steps = eqx.filter_jit(
        lambda z: jax.vmap(lambda y_: ode.solve(y_, args).stats["num_steps"])(z)
    )(ys_local)
    if not np.all(np.isfinite(np.asarray(ref_out))):
        raise RuntimeError(
            "The reference Neural ODE solve failed (non-finite result; with throw=False "
            "a failed diffrax solve returns NaN). Pass `ode=cd.NeuralODE(field, horizon, "
            "max_steps=..., rtol=..., atol=...)` with a larger `max_steps` or looser "
            "tolerances, or a stiff solver."
        )
    reference = {
        "sigma_max": float(ref_smax.max()),
        "sigma_min": float(ref_smin.min()),
        "cond": float(np.max(ref_smax / ref_smin)),
        "num_steps": int(np.max(np.asarray(ode_steps))),
    }

    vector_state = ys.ndim == 2
    families: dict[str, dict[str, list]] = {"euler": {}}
    if baselines:
        families["unscaled"] = {}
        if vector_state:
            families["plain"] = {}
            families["branch_1/N"] = {}
            families["branch_1/sqrt(N)"] = {}

    def record(fam, smax, smin, dist=None, err=None):
        cols = families[fam]
        with np.errstate(divide="ignore", invalid="ignore"):
            cond = np.where(np.isfinite(smax), smax / smin, np.inf)
        for name, v in (
            ("sigma_max", np.max(smax)),
            ("sigma_min", np.min(smin)),
            ("cond", np.max(cond)),
        ):
            cols.setdefault(name, []).append(float(v))
        if dist is not None:
            cols.setdefault("jac_rel_err", []).append(float(np.max(dist)))
            cols.setdefault("out_rel_err", []).append(float(np.max(err)))

    total = len(steps) * (1 + (len(families) - 1))
    bar = tqdm(total=total, desc="depth sweep", disable=not progress, leave=False)
    for i, n in enumerate(steps):
        kl = jr.fold_in(k_lanczos, i)
        h = horizon / n
        bar.set_postfix(N=n)
        smax, smin, dist, err, _ = measure(at_depth(n, horizon), ref, ref_out, kl)
        record("euler", smax, smin, dist, err)
        if main_label == "euler":  # Grönwall bounds of the forward-Euler product
            cols = families["euler"]
            cols.setdefault("upper_bound", []).append((1 + h * lipschitz) ** n)
            cols.setdefault("lower_bound", []).append(
                (1 - h * lipschitz) ** n if h * lipschitz < 1 else 0.0
            )
        bar.update()
        if not baselines:
            continue
        smax, smin, *_ = measure(at_depth(n, float(n)), None, None, kl)
        record("unscaled", smax, smin)
        bar.update()
        if vector_state:
            # One compile for all N (a traced trip count, forward mode only) -- except
            # under a mesh, where loops stay static scans (see `ys_local` above).
            traced = method == "dense" and mesh is None
            kn = jr.fold_in(k_plain, n)
            smax, smin, *_ = measure(random_stack("plain", kn, n, traced=traced), None, None, kl)
            record("plain", smax, smin)
            bar.update()
            kb = jr.fold_in(k_branch, n)
            for fam, scale in (("branch_1/N", 1 / n), ("branch_1/sqrt(N)", 1 / math.sqrt(n))):
                net = random_stack("branch", kb, n, scale, traced=traced)
                smax, smin, *_ = measure(net, None, None, kl)
                record(fam, smax, smin)
                bar.update()
    bar.close()

    return DepthSweep(
        steps=steps,
        horizon=horizon,
        dim=d,
        num_states=int(ys.shape[0]),
        lipschitz=lipschitz,
        families={f: {c: np.asarray(v) for c, v in cols.items()} for f, cols in families.items()},
        reference=reference,
        meta={
            "dtype": str(dtype),
            "method": method,
            "model": main_label,
            "devices": 1 if mesh is None else int(mesh.devices.size),
            "ode_solver": type(ode.solver).__name__,
            "ode_rtol": ode.rtol,
            "ode_atol": ode.atol,
            "baselines_note": (
                "plain and random-branch families need vector states"
                if baselines and not vector_state
                else ""
            ),
        },
    )
