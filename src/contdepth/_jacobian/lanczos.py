import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._validation import check_positive_int


class GolubKahanState(eqx.Module):
    """The state of [`contdepth.GolubKahanLanczos`][] after `index` steps: orthonormal
    bases `V` (right, rows `v_0..v_index`) and `U` (left, rows `u_0..u_{index-1}`)
    and the upper-bidiagonal `B = U^T J V` (diagonal `alpha`, super-diagonal
    `beta[1:]`). Rows not yet computed are zero."""

    right: Float[Array, "iters+1 d"]
    left: Float[Array, "iters d"]
    alpha: Float[Array, " iters"]
    beta: Float[Array, " iters+1"]
    index: Int[Array, ""]
    scale: Float[Array, ""]
    key: PRNGKeyArray


def _orthogonalise(w, basis):
    # Classical Gram-Schmidt twice ("twice is enough", Giraud et al. 2005). Rows of
    # `basis` not yet filled are zero and drop out, so no masking is needed.
    w = w - basis.T @ (basis @ w)
    return w - basis.T @ (basis @ w)


def _normalise_or_restart(w, basis, scale, key):
    """Normalise `w`; if it has (numerically) vanished, the Krylov space is invariant:
    continue from a fresh random direction orthogonal to `basis` and report 0."""
    norm = jnp.linalg.norm(w)
    tol = jnp.finfo(w.dtype).eps ** 0.75 * jnp.maximum(scale, jnp.finfo(w.dtype).tiny)
    fresh = _orthogonalise(jr.normal(key, w.shape, w.dtype), basis)
    # With all d directions already used `fresh` is zero; never divide by zero.
    fresh = fresh / jnp.maximum(jnp.linalg.norm(fresh), jnp.finfo(w.dtype).tiny)
    broke = norm <= tol
    safe = jnp.where(broke, 1.0, norm)
    return jnp.where(broke, fresh, w / safe), jnp.where(broke, 0.0, norm)


class GolubKahanLanczos(eqx.Module):
    """Golub-Kahan-Lanczos bidiagonalisation with full reorthogonalisation: Lanczos on
    `J^T J` written with one `J v` (jvp) and one `J^T u` (vjp) per step, never forming
    `J^T J`, so singular values come from the SVD of the bidiagonal `B` and are not
    squared (no loss of relative accuracy at the bottom of the spectrum).

    After `m` steps the singular values of the `m x m` bidiagonal `B_m` are the Ritz
    approximations of the singular values of `J` from the Krylov space
    `K_m(J^T J, v_0)`; the extreme ones converge first. With `m = d` they are exact.
    An exhausted (invariant) Krylov space is restarted from a random orthogonal
    direction, so low-rank-plus-identity Jacobians (narrow residual branches) are
    handled exactly.

    Written as `init`/`step` on an explicit [`contdepth.GolubKahanState`][], like an
    optax transformation or a diffrax solver: runs inside `jit`, `lax.scan` and `vmap`.

    References: Golub & Kahan 1965, "Calculating the singular values and
    pseudo-inverse of a matrix"; Larsen 1998, "Lanczos bidiagonalization with partial
    reorthogonalization" (PROPACK); Golub & Van Loan, "Matrix Computations", 10.4.
    """

    num_iters: int = eqx.field(static=True)

    def __init__(self, num_iters: int):
        """**Arguments:**

        - `num_iters`: the number of steps `m` the state has room for (the Krylov
            dimension); at most the state dimension `d`.
        """
        self.num_iters = check_positive_int("num_iters", num_iters)

    def init(
        self, operator: lx.AbstractLinearOperator, key: PRNGKeyArray
    ) -> GolubKahanState:
        """**Arguments:**

        - `operator`: a square linear operator on vectors `(d,)`, e.g.
            `lineax.linearise(cd.jacobian_operator(model, y))`.
        - `key`: PRNG key for the random start vector (and restarts).

        **Returns:**

        The initial [`contdepth.GolubKahanState`][].
        """
        struct = operator.in_structure()
        d, dtype = struct.shape[0], struct.dtype
        if self.num_iters > d:
            raise ValueError(
                f"`num_iters` must be <= the dimension d = {d} (the Krylov space "
                "cannot "
                f"be larger), got num_iters={self.num_iters}."
            )
        start_key, key = jr.split(key)
        v0 = jr.normal(start_key, (d,), dtype)
        right = (
            jnp.zeros((self.num_iters + 1, d), dtype)
            .at[0]
            .set(v0 / jnp.linalg.norm(v0))
        )
        return GolubKahanState(
            right=right,
            left=jnp.zeros((self.num_iters, d), dtype),
            alpha=jnp.zeros(self.num_iters, dtype),
            beta=jnp.zeros(self.num_iters + 1, dtype),
            index=jnp.array(0),
            scale=jnp.array(0.0, dtype),
            key=key,
        )

    def enlarge(self, state: GolubKahanState) -> GolubKahanState:
        """Continue a state of a solver with fewer `num_iters` in this one: the same
        bases and bidiagonal, zero-padded to this solver's room. Lets a driver start
        with a small Krylov space (cheap Ritz values) and grow it only if needed.

        **Arguments:**

        - `state`: a state with room for at most `self.num_iters` steps.

        **Returns:**

        The same [`contdepth.GolubKahanState`][], with room for `self.num_iters` steps.
        """
        extra = self.num_iters - state.alpha.shape[0]
        if extra < 0:
            raise ValueError(
                f"Cannot shrink a state with room for {state.alpha.shape[0]} steps to "
                f"num_iters={self.num_iters}."
            )
        pad_rows = lambda a: jnp.pad(a, ((0, extra), (0, 0)))  # noqa: E731
        return GolubKahanState(
            right=pad_rows(state.right),
            left=pad_rows(state.left),
            alpha=jnp.pad(state.alpha, (0, extra)),
            beta=jnp.pad(state.beta, (0, extra)),
            index=state.index,
            scale=state.scale,
            key=state.key,
        )

    def step(
        self, operator: lx.AbstractLinearOperator, state: GolubKahanState
    ) -> GolubKahanState:
        """One bidiagonalisation step: one `J v` and one `J^T u` product.

        **Arguments:**

        - `operator`: the operator passed to `init`.
        - `state`: the current state; a state that is already full is returned as is.

        **Returns:**

        The new state.
        """
        j = jnp.minimum(state.index, self.num_iters - 1)
        akey, bkey = jr.split(jr.fold_in(state.key, j))
        v = state.right[j]
        prev_u = jnp.where(j > 0, state.left[jnp.maximum(j - 1, 0)], 0.0)
        u = operator.mv(v) - state.beta[j] * prev_u
        u = _orthogonalise(u, state.left)
        scale = jnp.maximum(state.scale, jnp.linalg.norm(u))
        u, alpha = _normalise_or_restart(u, state.left, scale, akey)
        w = operator.transpose().mv(u) - alpha * v
        w = _orthogonalise(w, state.right)
        scale = jnp.maximum(scale, jnp.linalg.norm(w))
        w, beta = _normalise_or_restart(w, state.right, scale, bkey)
        new = GolubKahanState(
            right=state.right.at[j + 1].set(w),
            left=state.left.at[j].set(u),
            alpha=state.alpha.at[j].set(alpha),
            beta=state.beta.at[j + 1].set(beta),
            index=j + 1,
            scale=scale,
            key=state.key,
        )
        full = state.index >= self.num_iters
        return jax.tree.map(lambda a, b: jnp.where(full, a, b), state, new)

    def singular_values(
        self, state: GolubKahanState
    ) -> tuple[Float[Array, " iters"], Float[Array, " iters"]]:
        """The Ritz singular values of the current state and their residual bounds.

        **Arguments:**

        - `state`: a state from `init`/`step`.

        **Returns:**

        `(values, bounds)`, both shape `(num_iters,)`, values in descending order. Only
        the first `state.index` entries are defined (the rest are NaN). For each Ritz
        value `theta_i` there is a singular value of `J` within `bounds[i] =
        beta_m |p_{m,i}|` (`p` the left singular vectors of `B`): the standard a
        posteriori test for convergence.
        """
        m = self.num_iters
        bidiagonal = jnp.diag(state.alpha) + jnp.diag(state.beta[1:m], k=1)
        # Rows/columns past `index` are zero: they add exactly-zero singular values,
        # which sort last and are masked out.
        p, s, _ = jnp.linalg.svd(bidiagonal)
        last = jnp.maximum(state.index - 1, 0)
        bounds = jnp.abs(state.beta[state.index] * p[last, :])
        valid = jnp.arange(m) < state.index
        return jnp.where(valid, s, jnp.nan), jnp.where(valid, bounds, jnp.nan)
