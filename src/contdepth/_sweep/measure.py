"""The compiled measurement of one model at a batch of states: the extreme singular
values of its Jacobian and, against a reference, the relative Jacobian and output
errors.

Every compiled function here lives at module level and takes the models as arguments,
so a repeated sweep with equal models reuses the compiled programs.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from .._custom_types import Args
from .._distributed.mesh import batch_sharding, replicated
from .._jacobian._common import check_model_and_state, with_autodiff_mode
from .._jacobian.dense import jacobian
from .._jacobian.extreme import extreme_singular_values
from .._models.neural_ode import NeuralODE


class _Difference(eqx.Module):
    # `y -> a(y) - b(y)`: its Jacobian is `J_a - J_b`, so the matrix-free spectral norm
    # of a difference of Jacobians is one more Lanczos run.
    a: Callable[..., Any]
    b: Callable[..., Any]

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


def _rel_err(out, ref_out):
    return jnp.linalg.norm(out - ref_out) / jnp.linalg.norm(ref_out)


@eqx.filter_jit
def dense_point(model, ys, ref_jac, ref_out, args, mesh=None) -> dict:
    """Per state: `sigma_max`, `sigma_min` (`jax.jacfwd` + SVD) and, given the
    reference Jacobians and outputs, `jac_rel_err = ||J - J_ref||_2 / ||J_ref||_2` and
    `out_rel_err`."""

    def one(y, jac_ref, y_ref):
        jac = jacobian(model, y, args=args)
        smax, smin = _masked_spectrum(jac)
        out = dict(sigma_max=smax, sigma_min=smin)
        if jac_ref is not None:
            norm = jnp.linalg.norm(jac_ref, ord=2)
            dist = jnp.linalg.norm(jac - jac_ref, ord=2) / norm
            out.update(jac_rel_err=dist, out_rel_err=_rel_err(model(y, args), y_ref))
        return out

    return _per_sample(one, mesh, ys, ref_jac, ref_out)


def _jacobian_and_output(model, y, args):
    """`(J, model(y))`: the dense Jacobian as [`contdepth.jacobian`][] computes it
    (same mode, same autodiff pass), and the output taken from that pass's primal
    computation instead of a second evaluation."""
    check_model_and_state(model, y, args=args)
    # Traced once here (a solve is slow to trace), not again by `flat_map`.
    out = jax.eval_shape(lambda: model(y, args))
    if not hasattr(out, "shape") or not jnp.issubdtype(out.dtype, jnp.inexact):
        raise TypeError(
            "`model(y, args)` must return one floating-point array, got "
            f"{type(out).__name__}."
        )
    mode = "fwd" if np.prod(y.shape) <= np.prod(out.shape) else "rev"
    diff_model = with_autodiff_mode(model, mode)

    def with_out(x):  # `flat_map`'s map of flat vectors, its output also as aux
        flat = jnp.reshape(diff_model(jnp.reshape(x, y.shape), args), (-1,))
        return flat, flat

    jac_fn = jax.jacfwd if mode == "fwd" else jax.jacrev
    jac, flat = jac_fn(with_out, has_aux=True)(jnp.reshape(y, (-1,)))
    return jac, jnp.reshape(flat, out.shape)


@eqx.filter_jit
def dense_reference(model, ys, args, steps: bool = False) -> tuple:
    """Per state: the reference Jacobian, its singular values, the output and, with
    `steps`, the solver steps `model.solve(y, args)` took (a Neural ODE): one
    compiled program for all of them."""

    # A failed solve raises through `model(y)` with the model's own message, not
    # through a second `throw` of this solve.
    options: dict[str, Any] = {"throw": False} if isinstance(model, NeuralODE) else {}

    def one(y):
        jac, out = _jacobian_and_output(model, y, args)
        got = (jac, jnp.linalg.svd(jac, compute_uv=False), out)
        if not steps:
            return got
        return (*got, model.solve(y, args, **options).stats["num_steps"])

    return jax.vmap(one)(ys)


@eqx.filter_jit
def matrix_free_point(model, ys, ref, ref_out, ref_norm, args, key, mesh=None) -> dict:
    """Per state, by Golub-Kahan-Lanczos ([`contdepth.extreme_singular_values`][]):
    `sigma_max`, `sigma_min` with their error bounds and, given a reference model, the
    relative spectral distance `||J - J_ref||_2 / ||J_ref||_2` with its bound (from the
    Lanczos bounds of both norms; `ref_norm` is `(value, bound)` per state), and
    `converged`: whether every Lanczos value of the state passed its convergence
    test."""

    def one(y, y_ref, norm, k):
        k1, k2 = jr.split(k)
        ext = extreme_singular_values(model, y, 1, key=k1, args=args)
        # `which="both"` (the default) fills every field.
        assert ext.largest is not None and ext.largest_bound is not None
        assert ext.smallest is not None and ext.smallest_bound is not None
        out = dict(
            sigma_max=ext.largest[0],
            sigma_min=ext.smallest[0],
            sigma_max_bound=ext.largest_bound[0],
            sigma_min_bound=ext.smallest_bound[0],
            converged=ext.converged,
        )
        if ref is None:
            return out
        diff = extreme_singular_values(
            _Difference(model, ref), y, 1, key=k2, which="largest", args=args
        )
        assert diff.largest is not None and diff.largest_bound is not None
        (a, ea), (b, eb) = (diff.largest[0], diff.largest_bound[0]), norm
        rel = a / b
        # |a/b - a'/b'| <= (ea + (a/b) eb) / (b - eb) when |a-a'| <= ea, |b-b'| <= eb.
        bound = jnp.where(b > eb, (ea + rel * eb) / (b - eb), jnp.inf)
        out.update(
            jac_rel_err=rel,
            jac_rel_err_bound=bound,
            out_rel_err=_rel_err(model(y, args), y_ref),
            converged=out["converged"] & diff.converged,
        )
        return out

    keys = jr.split(key, ys.shape[0])
    return _per_sample(one, mesh, ys, ref_out, ref_norm, keys)


@eqx.filter_jit
def outputs(model, ys, args):
    """`model(y, args)` for every state."""
    return jax.vmap(lambda y: model(y, args))(ys)


@eqx.filter_jit
def solver_steps(model, ys, args):
    """The solver steps `model.solve(y, args)` took for every state (a Neural ODE)."""
    return jax.vmap(lambda y: model.solve(y, args).stats["num_steps"])(ys)


@dataclasses.dataclass(frozen=True)
class Measure:
    """Measures models at the sweep's states, dense or matrix-free, on one device or
    split over a mesh (every operand placed explicitly: no mixed placements)."""

    method: Literal["dense", "matrix_free"]
    ys: jax.Array
    args: Args
    mesh: Mesh | None = None

    @property
    def ys_local(self) -> jax.Array:
        """The states on one device (all of them)."""
        if self.mesh is None:
            return self.ys
        return jax.device_put(self.ys, self.mesh.devices.flat[0])

    def local(self, model):
        """`model` placed on the device holding `ys_local`."""
        if self.mesh is None:
            return model
        return eqx.filter_shard(model, self.mesh.devices.flat[0])

    def __call__(self, model, reference=None, key=None) -> dict[str, np.ndarray]:
        """Per-state measurements of `model` (and against `reference`, a
        `sweep.reference.Reference`, when given), as NumPy arrays."""
        mesh = self.mesh
        ref_jac = ref_model = ref_out = ref_norm = None
        if reference is not None:
            ref_jac, ref_model = reference.jac, reference.operator
            ref_out, ref_norm = reference.out, reference.norm
        if mesh is not None:
            model = eqx.filter_shard(model, replicated(mesh))
            by_state = batch_sharding(mesh)
            ref_model = eqx.filter_shard(ref_model, replicated(mesh))
            ref_jac, ref_out, ref_norm = jax.tree.map(
                lambda x: jax.device_put(x, by_state), (ref_jac, ref_out, ref_norm)
            )
        if self.method == "dense":
            point = dense_point(model, self.ys, ref_jac, ref_out, self.args, mesh)
        else:
            point = matrix_free_point(
                model, self.ys, ref_model, ref_out, ref_norm, self.args, key, mesh
            )
        return {name: np.asarray(v) for name, v in point.items()}
