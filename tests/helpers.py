import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import contdepth as cd


def tree_allclose(x, y, *, rtol=1e-5, atol=1e-8):
    return eqx.tree_equal(x, y, typematch=True, rtol=rtol, atol=atol)


def max_rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def make_field(kind: str, key):
    """A small field of each kind and a matching random state."""
    k1, k2 = jr.split(key)
    if kind == "mlp":
        return cd.MLPField(3, 8, 2, key=k1), jr.normal(k2, (3,))
    if kind == "mlp_time":
        return cd.MLPField(3, 8, 1, time_dependent=True, key=k1), jr.normal(k2, (3,))
    if kind == "linear":
        return cd.LinearField(0.5 * jr.normal(k1, (3, 3))), jr.normal(k2, (3,))
    if kind == "conv":
        return cd.ConvField(2, width=3, key=k1), jr.normal(k2, (2, 4, 4))
    if kind == "attention":
        return cd.AttentionField(4, num_heads=2, key=k1), jr.normal(k2, (3, 4))
    if kind == "piecewise":
        fields = [cd.MLPField(3, 8, 1, key=k) for k in jr.split(k1, 4)]
        return cd.PiecewiseField(fields, 1.0), jr.normal(k2, (3,))
    raise ValueError(kind)


FIELD_KINDS = ("mlp", "mlp_time", "linear", "conv", "attention", "piecewise")


def make_model(kind: str, key, *, num_steps: int = 6):
    """A small depth model of each family acting on `(3,)` states, and a state."""
    k1, k2 = jr.split(key)
    y = jr.normal(k2, (3,))
    if kind == "euler":
        return cd.EulerResNet(cd.MLPField(3, 8, 1, key=k1), num_steps, 1.0), y
    if kind == "ode":
        return cd.NeuralODE(cd.MLPField(3, 8, 1, key=k1), 1.0, rtol=1e-10, atol=1e-12), y
    if kind == "plain":
        return cd.PlainNet(3, num_steps, key=k1), y
    if kind == "highway":
        return cd.HighwayNet(3, num_steps, key=k1), y
    if kind == "scaled":
        fields = [cd.MLPField(3, 8, 1, key=k) for k in jr.split(k1, num_steps)]
        return cd.ScaledResidualNet(fields, num_steps, alpha="nonexpansive", beta=0.5), y
    raise ValueError(kind)


MODEL_KINDS = ("euler", "ode", "plain", "highway", "scaled")


def central_difference_grad(f, x, eps=1e-6):
    """Central finite differences of a scalar function of a flat float64 vector."""
    x = jnp.asarray(x, dtype=jnp.float64)
    basis = jnp.eye(x.size, dtype=x.dtype)
    return jax.vmap(lambda e: (f(x + eps * e) - f(x - eps * e)) / (2 * eps))(basis)


def make_reversible_model(kind: str, key):
    """A small `MomentumResNet` (`kind="momentum"`) or `ReversibleResNet`
    (`"reversible"`) on `(4,)` states, 6 steps over T = 1."""
    k1, k2 = jr.split(key)
    if kind == "momentum":
        return cd.MomentumResNet(cd.MLPField(4, 8, 1, key=k1), 6, 1.0, gamma=0.5)
    if kind == "reversible":
        return cd.ReversibleResNet(
            cd.MLPField(2, 8, 1, key=k1), cd.MLPField(2, 8, 1, key=k2), 6, 1.0
        )
    raise ValueError(kind)


def ascend(objective, starts, steps: int, step0: float = 0.1):
    """Largest `objective` found by monotone normalised-gradient ascent from each start
    (a step is kept only if it increases the objective; the step grows by 1.5 on
    success and halves on failure, so kinks and suprema at infinity are reached)."""
    value_and_grad = jax.value_and_grad(objective)

    def run(x0):
        def body(carry, _):
            x, v, g, lr = carry
            x_new = x + lr * g / (jnp.linalg.norm(g) + 1e-300)
            v_new, g_new = value_and_grad(x_new)
            better = v_new > v
            x, v, g = jax.tree.map(
                lambda a, b: jnp.where(better, a, b), (x_new, v_new, g_new), (x, v, g)
            )
            return (x, v, g, jnp.where(better, 1.5 * lr, 0.5 * lr)), None

        v0, g0 = value_and_grad(x0)
        init = (x0, v0, g0, jnp.asarray(step0))
        (_, v, _, _), _ = jax.lax.scan(body, init, None, steps)
        return v

    return float(jnp.max(jax.jit(jax.vmap(run))(starts)))
