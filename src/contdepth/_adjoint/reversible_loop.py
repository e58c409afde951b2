"""The loop of [`contdepth.ReversibleAdjoint`][] inside `diffrax.diffeqsolve`: checks,
the custom VJP that walks reversible Heun backwards, and the step times."""

import functools as ft

import diffrax
import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu

from .reversible_scan import reconstruction_error


_FIX = "or use `adjoint=diffrax.RecursiveCheckpointAdjoint()` (exact, checkpointed)"
_SAVE_Y = diffrax.SubSaveAt(t1=True).fn  # diffrax's default `fn`: save `y` itself
_NONDIFF_ENTRIES = (
    "y",
    "tprev",
    "tnext",
    "solver_state",
    "controller_state",
    "dense_ts",
    "dense_infos",
)


def _is_save_state(x) -> bool:
    return hasattr(x, "ys") and hasattr(x, "saveat_ts_index")


def only_ys_differentiable(final_state):
    """The final state of the loop with cotangents flowing through the saved `ys`
    only: differentiating any other part of it raises (diffrax's own rule for its
    adjoints, restated through the state's public fields)."""

    def get_ys(state):
        return [s.ys for s in jtu.tree_leaves(state.save_state, is_leaf=_is_save_state)]

    ys = get_ys(final_state)
    nondiff = tuple(
        eqxi.nondifferentiable_backward(getattr(final_state, k), name=k, symbolic=False)
        for k in _NONDIFF_ENTRIES
    )
    final_state = eqxi.nondifferentiable_backward(final_state, symbolic=False)
    final_state = eqx.tree_at(
        lambda s: tuple(getattr(s, k) for k in _NONDIFF_ENTRIES),
        final_state,
        nondiff,
        is_leaf=lambda x: x is None,
    )
    return eqx.tree_at(get_ys, final_state, ys)


def _unsupported(error, argument: str, value, fix: str) -> Exception:
    return error(
        f"`adjoint=cd.ReversibleAdjoint()` does not support `{argument}={value}`: "
        f"{fix}, {_FIX}."
    )


def check_supported(solver, stepsize_controller, terms, saveat, event) -> None:
    """Raise at trace time for anything the reversible backward pass cannot undo."""
    if not isinstance(solver, diffrax.ReversibleHeun):
        raise _unsupported(
            ValueError,
            "solver",
            f"{type(solver).__name__}()",
            "it needs an algebraically reversible solver, "
            "`solver=diffrax.ReversibleHeun()`",
        )
    if not isinstance(stepsize_controller, diffrax.ConstantStepSize):
        raise _unsupported(
            ValueError,
            "stepsize_controller",
            f"{type(stepsize_controller).__name__}(...)",
            "it needs constant steps, `stepsize_controller=diffrax.ConstantStepSize()` "
            "with `dt0=`",
        )
    if event is not None:
        raise _unsupported(
            NotImplementedError,
            "event",
            f"{type(event).__name__}(...)",
            "it rebuilds a solve that runs all the way to `t1`; drop `event`",
        )
    # `diffeqsolve` hands the loop its terms wrapped (in diffrax's private `WrapTerm`).
    term = getattr(terms, "term", terms)
    if not isinstance(term, diffrax.ODETerm):
        if isinstance(term, diffrax.MultiTerm):
            why = "it needs a single `diffrax.ODETerm` (no `MultiTerm`, no SDE terms)"
        else:
            why = "it needs one `diffrax.ODETerm`; SDE/control terms cannot be undone"
        raise _unsupported(
            NotImplementedError, "terms", f"{type(term).__name__}(...)", why
        )
    sub = saveat.subs
    supported_sub = (
        isinstance(sub, diffrax.SubSaveAt)
        and sub.t1
        and sub.ts is None
        and sub.steps == 0
        and sub.fn is _SAVE_Y
    )
    if saveat.dense or not supported_sub:
        raise _unsupported(
            NotImplementedError,
            "saveat",
            saveat,
            "it saves only the final state, `saveat=diffrax.SaveAt(t1=True)` "
            "(optionally with `t0=True`); no `ts`, `steps`, `dense`, `fn` or several "
            "`subs`",
        )


# The gradient is taken with respect to `(y0, solver_state0, args, terms)`: everything
# else passed to `diffeqsolve` (times, `dt0`) is nondifferentiable here.
@eqx.filter_custom_vjp
def loop_reversible(y__state__args__terms, *, self, throw, init_state, **kwargs):
    del throw
    y, solver_state, args, terms = y__state__args__terms
    init_state = eqx.tree_at(
        lambda s: (s.y, s.solver_state), init_state, (y, solver_state)
    )
    return self._loop(
        args=args,
        terms=terms,
        init_state=init_state,
        inner_while_loop=ft.partial(eqxi.while_loop, kind="lax"),
        outer_while_loop=ft.partial(eqxi.while_loop, kind="lax"),
        **kwargs,
    )


@loop_reversible.def_fwd
def _loop_reversible_fwd(perturbed, y__state__args__terms, **kwargs):
    del perturbed
    final_state, aux_stats = loop_reversible(y__state__args__terms, **kwargs)
    # Only the final reversible Heun state and the step count are kept: every earlier
    # state is rebuilt on the way back.
    residuals = (final_state.y, final_state.solver_state, final_state.num_steps)
    return (final_state, aux_stats), residuals


@loop_reversible.def_bwd
def _loop_reversible_bwd(
    residuals,
    grad_final_state__aux_stats,
    perturbed,
    y__state__args__terms,
    *,
    solver,
    stepsize_controller,
    saveat,
    t1,
    init_state,
    **kwargs,
):
    del perturbed, kwargs
    y_final, (yhat_final, vf_final), num_steps = residuals
    y0, (yhat0, vf0), args, terms = y__state__args__terms
    grad_ys = grad_final_state__aux_stats[0].save_state.ys
    num_saved = 2 if saveat.subs.t0 else 1
    grad_ys = jtu.tree_map(
        lambda y, g: jnp.zeros((num_saved,) + y.shape, y.dtype) if g is None else g,
        y_final,
        grad_ys,
        is_leaf=lambda x: x is None,
    )
    diff, static = eqx.partition((args, terms), eqx.is_inexact_array)
    times = _step_times(stepsize_controller, init_state, t1)
    made_jump = init_state.made_jump

    def cond(carry):
        return carry[0] > 0

    def body(carry):
        k, z_next, grad_z_next, grad_diff = carry
        k = k - 1
        tprev, tnext = times(k)
        z = heun_inverse(terms, tprev, tnext, args, z_next)
        # Only the first step can see a jump (`diffeqsolve(..., made_jump=...)`).
        jump_k = False if made_jump is False else (k == 0) & made_jump

        def step(diff_, z_):
            args_, terms_ = eqx.combine(diff_, static)
            y, yhat, vf = z_
            y1, _, _, (yhat1, vf1), _ = solver.step(
                terms_, tprev, tnext, y, args_, (yhat, vf), jump_k
            )
            return y1, yhat1, vf1

        _, vjp = jax.vjp(step, diff, z)
        grad_diff_k, grad_z = vjp(grad_z_next)
        grad_diff = jtu.tree_map(jnp.add, grad_diff, grad_diff_k)
        return k, z, grad_z, grad_diff

    # The saved final state is `ys[-1]`; with `SaveAt(t0=True)` `ys[0]` is `y0` itself.
    grad_final = (
        jtu.tree_map(lambda g: g[-1], grad_ys),
        jtu.tree_map(jnp.zeros_like, yhat_final),
        jtu.tree_map(jnp.zeros_like, vf_final),
    )
    init = (
        num_steps,
        (y_final, yhat_final, vf_final),
        grad_final,
        jtu.tree_map(jnp.zeros_like, diff),
    )
    # A dynamic trip count: the number of steps is only known once t0, t1 are.
    _, (y0_rebuilt, yhat0_rebuilt, _), grad_z0, grad_diff = lax.while_loop(
        cond, body, init
    )
    grad_y0, grad_yhat0, grad_vf0 = grad_z0
    if saveat.subs.t0:
        grad_y0 = jtu.tree_map(lambda g, gs: g + gs[0], grad_y0, grad_ys)
    grad_args, grad_terms = grad_diff
    grads = (grad_y0, (grad_yhat0, grad_vf0), grad_args, grad_terms)
    # The true initial state is at hand, so the drift of the rebuilt states costs one
    # comparison; beyond sqrt(eps) the gradient would be silently wrong. The check is
    # tied to every output, so it survives when only some gradients are used.
    drift = reconstruction_error((y0_rebuilt, yhat0_rebuilt), (y0, yhat0))
    tol = jnp.sqrt(jnp.finfo(drift.dtype).eps)
    return eqx.error_if(grads, drift > tol, _DRIFT_MESSAGE)


_DRIFT_MESSAGE = (
    "adjoint=cd.ReversibleAdjoint(): rebuilding the reversible Heun steps backwards "
    "drifted from the initial state by more than sqrt(eps) (relative), so this "
    "gradient would be wrong. Undoing the steps amplifies round-off where the "
    "dynamics contract strongly (by up to exp(Lip(F) * |t1 - t0|)) or where "
    "h * Lip(F) is not small: use float64, a shorter interval or a smaller dt0, or "
    "adjoint=diffrax.RecursiveCheckpointAdjoint()."
)


def _step_times(stepsize_controller, init_state, t1):
    """`k -> (t_k, t_{k+1})`: the times of the `k`-th step exactly as diffrax's
    `loop` produced them with `ConstantStepSize`, from the controller itself.

    `ConstantStepSize` makes every step after the first from its state `(steps
    completed, num_steps, t0, t1)` alone (`t0 + (t1 - t0) * steps / num_steps`, `t1` on
    the last), so any step's times are a function of `k`, and `loop` clips them to `t1`
    (within 100 ULP of `t1`, see `diffrax._integrate._clip_to_end`). The first step is
    `[t0, min(t0 + dt0, t1)]`, the initial `tprev`, `tnext`.
    """
    controller_state = init_state.controller_state
    if not (isinstance(controller_state, tuple) and len(controller_state) == 4):
        raise NotImplementedError(
            "`adjoint=cd.ReversibleAdjoint()` rebuilds the step times from the state "
            "of `diffrax.ConstantStepSize`, (steps_completed, num_steps, t0, t1), but "
            f"this diffrax version has {controller_state!r}; {_FIX}."
        )
    steps_completed0, *rest = controller_state
    t1_clip_floor = t1
    for _ in range(100):
        t1_clip_floor = eqxi.prevbefore(t1_clip_floor)

    def tnext(j):
        # Step `j >= 1` ends where the controller put it after `j - 1` more steps.
        state = (steps_completed0 + j - 1, *rest)
        _, _, t, _, _, _ = stepsize_controller.adapt_step_size(
            t1, t1, None, None, None, None, None, state
        )
        t = jnp.where(t > t1_clip_floor, t1, t)
        return jnp.where(j == 0, init_state.tnext, t)

    def times(k):
        tprev = jnp.where(k == 0, init_state.tprev, jnp.minimum(tnext(k - 1), t1))
        return tprev, tnext(k)

    return times


def heun_inverse(terms, t0, t1, args, z):
    """`(y_k, yhat_k, f_k)` from `(y_{k+1}, yhat_{k+1}, f_{k+1})`: the closed-form
    inverse of `diffrax.ReversibleHeun.step` on `[t0, t1]`."""
    y1, yhat1, vf1 = z
    control = terms.contr(t0, t1)
    yhat = jtu.tree_map(
        lambda a, b, c: 2 * a - b - c, y1, yhat1, terms.prod(vf1, control)
    )
    vf = terms.vf(t0, yhat, args)
    vf_sum = jtu.tree_map(jnp.add, vf, vf1)
    y = jtu.tree_map(lambda a, c: a - 0.5 * c, y1, terms.prod(vf_sum, control))
    return y, yhat, vf
