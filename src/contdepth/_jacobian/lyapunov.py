from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._custom_types import Args, State
from .._fields.protocol import check_field, check_field_state
from .._step_rule import Method, METHODS, rk_step, step_time
from .._validation import check_key, check_positive_float, check_positive_int
from ._common import check_choice, check_k


class LyapunovQRState(eqx.Module):
    """The state of [`contdepth.LyapunovQR`][] after `step_index` steps: the current
    point `y_n` of the discrete trajectory, the orthonormal frame `Q_n` (flattened
    states as columns) and the accumulated `sum_{m < n} log|diag R_m|`."""

    y: State
    frame: Float[Array, "d k"]
    log_growth: Float[Array, " k"]
    step_index: Int[Array, ""]


class LyapunovQR(eqx.Module):
    """The QR (Benettin) method for Lyapunov exponents, as explicit `init`/`step` on a
    [`contdepth.LyapunovQRState`][] (like a diffrax solver or an optax transformation),
    so it runs inside `lax.scan`, `jit` and `vmap`.

    Each step advances the state by one explicit Runge-Kutta step `y_{n+1} =
    Phi_h(t_n, y_n)`, pushes the frame forward with the step Jacobian (`k` jvps,
    vmapped over the columns), `Q_n -> D Phi_h(y_n) Q_n = Q_{n+1} R_n` (thin QR), and
    adds `log|diag R_n|`. Re-orthonormalising every step keeps the columns from all
    collapsing onto the most expanding direction.

    References: Benettin, Galgani, Giorgilli & Strelcyn 1980, "Lyapunov characteristic
    exponents for smooth dynamical systems and for Hamiltonian systems", Meccanica 15;
    Shimada & Nagashima 1979; Dieci, Russell & Van Vleck 1997, "On the computation of
    Lyapunov exponents for continuous dynamical systems", SIAM J. Numer. Anal. 34.
    """

    field: Callable
    step_size: float = eqx.field(static=True)
    num_exponents: int = eqx.field(static=True)
    method: str = eqx.field(static=True)

    def __init__(
        self,
        field: Callable,
        step_size: float,
        num_exponents: int,
        method: Method = "euler",
    ):
        """**Arguments:**

        - `field`: the vector field `F(t, y, args)` (any callable).
        - `step_size`: the step `h > 0`.
        - `num_exponents`: the frame size `k`; checked against the state dimension in
            `init`.
        - `method`: `"euler"`, `"heun"`, `"midpoint"` or `"rk4"`: the explicit
            Runge-Kutta map whose Jacobians are multiplied.
        """
        self.field = check_field("field", field)
        self.step_size = check_positive_float("step_size", step_size)
        self.num_exponents = check_positive_int("num_exponents", num_exponents)
        self.method = check_choice("method", method, METHODS)

    def init(self, y0: State, key: PRNGKeyArray) -> LyapunovQRState:
        """**Arguments:**

        - `y0`: the initial state (any shape; frames act on it flattened).
        - `key`: PRNG key for the random orthonormal start frame `Q_0` (random so that
            no column starts inside an invariant subspace, e.g. an eigenvector of a
            diagonal `A`, where it would stay forever).

        **Returns:**

        The initial [`contdepth.LyapunovQRState`][].
        """
        check_field_state(self.field, y0, name="y0")
        d = y0.size
        k = check_k(self.num_exponents, d, "num_exponents")
        frame, _ = jnp.linalg.qr(jr.normal(key, (d, k), dtype=y0.dtype))
        return LyapunovQRState(
            y=y0,
            frame=frame,
            log_growth=jnp.zeros(k, dtype=y0.dtype),
            step_index=jnp.array(0),
        )

    def step(self, state: LyapunovQRState, args: Args = None) -> LyapunovQRState:
        """One step of the trajectory and of the frame: `k` jvps and one `d x k` QR.

        **Arguments:**

        - `state`: the current state.
        - `args`: forwarded to the field.

        **Returns:**

        The new state.
        """
        y = state.y
        shape, dtype = y.shape, y.dtype
        h = jnp.asarray(self.step_size, dtype=dtype)
        t = step_time(state.step_index, h)

        def flat_step(x):
            y_next = rk_step(self.method, self.field, t, x.reshape(shape), h, args)
            return jnp.reshape(y_next, (-1,))

        y_next, push = jax.linearize(flat_step, jnp.reshape(y, (-1,)))
        frame, r = jnp.linalg.qr(jax.vmap(push, in_axes=1, out_axes=1)(state.frame))
        return LyapunovQRState(
            y=jnp.reshape(y_next, shape),
            frame=frame,
            log_growth=state.log_growth + jnp.log(jnp.abs(jnp.diagonal(r))),
            step_index=state.step_index + 1,
        )

    def exponents(self, state: LyapunovQRState) -> Float[Array, " k"]:
        """The finite-time exponents `log_growth / (n h)` after `n = step_index` steps
        (NaN before the first step)."""
        elapsed = state.step_index.astype(state.log_growth.dtype) * self.step_size
        return jnp.where(state.step_index > 0, state.log_growth / elapsed, jnp.nan)


def lyapunov_exponents(
    field: Callable,
    y0: State,
    horizon: float,
    *,
    num_steps: int,
    k: int | None = None,
    method: Method = "euler",
    key: PRNGKeyArray | None = None,
    args: Args = None,
) -> Float[Array, " k"]:
    """The `k` leading finite-time Lyapunov exponents of `dy/dt = F(t, y)` along the
    trajectory from `y0` over `[0, horizon]`, by the QR (Benettin) method,
    [`contdepth.LyapunovQR`][], run for `num_steps` steps of size
    `h = horizon / num_steps` in a `lax.scan`.

    What is computed is exact for the *discrete* map: with `J = D Phi_h(y_{N-1}) ...
    D Phi_h(y_0)` the Jacobian of `num_steps` steps of `method` (for `"euler"`,
    `cd.jacobian(cd.EulerResNet(field, num_steps, horizon), y0)`) and `Q_0` the random
    start frame, `J Q_0 = Q_N R` with `R = R_{N-1} ... R_0` upper triangular, and
    exponent `i` is `log|R_ii| / horizon`.

    **Finite T: these are not `log sigma_i(J) / T`.** Exponent `i` measures how the
    `i`-th Gram-Schmidt direction of the *evolved start frame* grows, whereas the
    singular values measure the *optimal* directions. The two agree only in the limit
    `T -> inf` (Oseledets' theorem); at finite `T` they differ by `O(1/T)` terms
    (transients of non-normal Jacobians, the start frame). They are related by
    majorisation: `sum_{j<=i} exponent_j <= sum_{j<=i} log sigma_j(J) / T` for every
    `i`, with **equality of the full sums**: with `k = d`,
    `sum_i exponent_i = log|det J| / T` exactly (to round-off) =
    `cd.log_det_jacobian(model, y0) / T` for the matching discrete model. For
    `LinearField(A)` and long horizons the exponents tend to the real parts of the
    eigenvalues of `A` (more precisely to `log|R(h lambda)| / h`, `R` the method's
    stability function, which is `Re lambda + O(h^p)`).

    To remove the start-up transient, run [`contdepth.LyapunovQR`][] yourself for a
    burn-in time `T_0`, then divide the *increase* of `state.log_growth` by the
    remaining time.

    **Arguments:**

    - `field`: the vector field `F(t, y, args)`: any callable.
    - `y0`: the initial state (any shape; flattened to `d = prod(y0.shape)`).
    - `horizon`: the final time `T > 0`.
    - `num_steps`: the number of steps `N >= 1`.
    - `k`: how many exponents, `1 <= k <= d`; default `d` (the full spectrum).
    - `method`: `"euler"` (the map of a [`contdepth.EulerResNet`][]), `"heun"`,
        `"midpoint"` or `"rk4"` (classical fourth order; use it, or many steps, when
        you want the exponents of the ODE rather than of its Euler network).
    - `key`: PRNG key for the random orthonormal start frame; default
        `jax.random.PRNGKey(0)`. The exponents depend on it only through `O(1/T)`
        terms (and their sum with `k = d` not at all).
    - `args`: forwarded to the field.

    **Returns:**

    The `k` exponents, shape `(k,)`, in frame-column order; for generic start frames
    this approaches descending order as `T` grows.
    """
    check_field("field", field)
    check_field_state(field, y0, args, "y0")
    horizon = check_positive_float("horizon", horizon)
    num_steps = check_positive_int("num_steps", num_steps)
    check_choice("method", method, METHODS)
    k = y0.size if k is None else check_k(k, y0.size)
    key = jr.PRNGKey(0) if key is None else check_key("key", key)
    return _run(
        LyapunovQR(field, horizon / num_steps, k, method), y0, key, args, num_steps
    )


@eqx.filter_jit
def _run(solver: LyapunovQR, y0, key, args, num_steps: int):
    state = solver.init(y0, key)
    state, _ = jax.lax.scan(
        lambda s, _: (solver.step(s, args), None), state, None, length=num_steps
    )
    return solver.exponents(state)
