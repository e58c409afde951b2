import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import contdepth as cd
from contdepth._experiments.circles import (
    concentric_circles,
    nfe_per_solve,
    run_circles,
)
from contdepth._experiments.robustness import run_robustness
from contdepth._models.augmented import AugmentedNeuralODE


def _ode(dim, key):
    # Constant steps: the same model semantics, a much smaller program to compile.
    field = cd.MLPField(dim, 8, 1, key=key)
    return cd.NeuralODE(field, 1.0, solver=diffrax.Heun(), dt0=0.25)


def test_zero_augmentation_is_the_neural_ode(getkey):
    ode = _ode(4, getkey())
    y = jr.normal(getkey(), (4,))
    assert jnp.array_equal(AugmentedNeuralODE(ode, 0)(y), ode(y))


def test_augmented_flow_starts_at_zero(getkey):
    # Every model here wraps a NeuralODE of one structure: one compilation in all.
    p = 2
    model = AugmentedNeuralODE(_ode(2 + p, getkey()), p, keep_augmented=True)
    x = jr.normal(getkey(), (2,))
    lifted = model.lift(x)
    assert jnp.array_equal(lifted, jnp.array([x[0], x[1], 0.0, 0.0]))
    full = model(x)
    assert full.shape == (4,)
    assert jnp.array_equal(full, model.ode(lifted))
    # The augmented coordinates do move: the flow is on R^(2+p).
    assert float(jnp.max(jnp.abs(full[2:]))) > 1e-3
    assert jnp.array_equal(AugmentedNeuralODE(model.ode, p)(x), full[:2])


def test_augmented_errors_and_classifier(getkey):
    with pytest.raises(ValueError, match="padded with 1 zeros"):
        AugmentedNeuralODE(_ode(3, getkey()), 1)(jnp.ones(3))
    with pytest.raises(TypeError, match="augment"):
        AugmentedNeuralODE(_ode(3, getkey()), 1.0)
    with pytest.raises(ValueError, match="augment"):
        AugmentedNeuralODE(_ode(3, getkey()), -1)
    with pytest.raises(TypeError, match="NeuralODE"):
        AugmentedNeuralODE(cd.MLPField(3, 8, 1, key=getkey()), 1)
    # Projected, it is a depth model (d,) -> (d,) and a Classifier body.
    body = AugmentedNeuralODE(_ode(4, getkey()), 1)
    clf = cd.Classifier(
        eqx.nn.Linear(5, 3, key=getkey()), body, eqx.nn.Linear(3, 2, key=getkey())
    )
    x = jr.normal(getkey(), (5,))
    assert jnp.array_equal(clf(x), clf.readout(body(clf.encoder(x))))
    assert clf(x).shape == (2,)


def test_augmented_gradients_finite(getkey):
    model = AugmentedNeuralODE(_ode(4, getkey()), 2, keep_augmented=True)
    x = jr.normal(getkey(), (2,))

    @eqx.filter_jit
    @eqx.filter_grad
    def grad(m):
        return jnp.sum(m(x) ** 2)

    leaves = jax.tree.leaves(eqx.filter(grad(model), eqx.is_inexact_array))
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)


def test_nfe_formula_counts_field_calls(getkey):
    field = cd.MLPField(3, 8, 1, key=getkey())
    calls = [0]

    def counted(t, y, args):
        jax.debug.callback(lambda: calls.__setitem__(0, calls[0] + 1))
        return field(t, y, args)

    model = cd.NeuralODE(counted, 1.0, solver=diffrax.Dopri5(), rtol=1e-8, atol=1e-8)
    sol = model.solve(jr.normal(getkey(), (3,)))
    jax.effects_barrier()
    assert int(sol.stats["num_steps"]) > 1
    assert calls[0] == int(nfe_per_solve(sol.stats["num_steps"]))


def test_concentric_circles(getkey):
    x, g = concentric_circles(400, getkey())
    r = np.linalg.norm(np.asarray(x), axis=1)
    g = np.asarray(g)
    assert np.sum(g == -1) == 200 and np.sum(g == 1) == 200
    assert np.all(r[g == -1] <= 0.5) and np.all((r[g == 1] >= 1) & (r[g == 1] <= 1.5))


@pytest.mark.research  # ~8 dopri5 programs to compile (a minute); `make research`
def test_circles_augmented_beats_plain():
    # Same budget (steps, batches, Adam, dopri5 tolerances) for both; on every key the
    # augmented model fits the circles better than the plain one, a homeomorphism of
    # the plane. Compilation dominates the cost: further keys are nearly free.
    for seed in (0, 1, 2):
        result = run_circles(
            key=jr.PRNGKey(seed),
            steps=40,
            batch_size=32,
            width=16,
            num_train=64,
            num_test=32,
            num_jacobian=2,
            grid_size=2,
            rtol=1e-2,
            atol=1e-2,
        )
        node, anode = result.models["node"], result.models["anode"]
        assert anode["train_accuracy"] > node["train_accuracy"], seed
        assert anode["train_loss"] < node["train_loss"], seed
        assert len(anode["nfe_mean"]) == 40 and np.all(anode["nfe_mean"] >= 7)
        assert np.isfinite(anode["sigma_max_max"]) and anode["sigma_max_max"] > 0


def test_jacobian_regulariser_shrinks_sigma_max():
    (x_tr, y_tr), (x_te, y_te) = cd.datasets.digits()
    data = ((x_tr[:256], y_tr[:256]), (x_te[:64], y_te[:64]))
    for seed in (0, 1, 2):
        result = run_robustness(
            key=jr.PRNGKey(seed),
            variants=("plain", "jacobian"),
            lams=(1.0,),
            steps=60,
            batch_size=64,
            dim=8,
            width=16,
            depth=4,
            epsilons=(0.5,),
            num_test=16,
            attack_iters=3,
            data=data,
        )
        plain, reg = result.variants["plain"], result.variants["jacobian lam=1"]
        # Measurably smaller: the regularised model's sigma_max and worst-case output
        # change, at some accuracy cost (measured: 0.67-0.73 vs 0.72-0.83).
        assert reg["sigma_max_mean"] < 0.85 * plain["sigma_max_mean"], seed
        assert reg["change_max"][0] < plain["change_max"][0], seed
