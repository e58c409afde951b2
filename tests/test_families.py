"""Depth families: any `N -> model` callable swept by `cd.depth_sweep`, the built-in
families of `cd.families`, callable fields, Lanczos bounds and the recompilation guard
(issue "Depth families")."""

import json
import logging
import time

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import contdepth as cd


class UntiedStack(eqx.Module):
    """A user model: `N` residual blocks `y + tanh(W_k y) / N` with untied weights."""

    weights: jax.Array

    def __init__(self, num_layers: int, dim: int = 3):
        key = jr.fold_in(jr.PRNGKey(0), num_layers)
        self.weights = jr.normal(key, (num_layers, dim, dim)) / jnp.sqrt(dim)

    def __call__(self, y, args=None):
        scale = 1 / self.weights.shape[0]

        def block(y, w):
            return y + scale * jnp.tanh(w @ y), None

        return lax.scan(block, y, self.weights)[0]


class ModuleField(eqx.Module):
    """A field that is an `eqx.Module` but not a `cd.AbstractVectorField`."""

    matrix: jax.Array

    def __call__(self, t, y, args):
        return self.matrix @ y


def test_user_families_table_json_and_plot(getkey, tmp_path):
    field = cd.MLPField(3, 8, 1, key=getkey())
    y = jr.normal(getkey(), (3,))
    families = {
        "scaled": lambda n: cd.ScaledResidualNet(field, n, alpha=1 / n),
        "euler": cd.families.euler(field, 1.0),
        "mine": lambda n: UntiedStack(n),
    }
    steps = (2, 8)
    result = cd.depth_sweep(families, y, steps=steps, progress=False)
    assert list(result.families) == ["scaled", "euler", "mine"]
    # The reference is the Euler family's limit; the first family is compared with it.
    assert result.meta["compare"] == ["scaled"] and result.reference["num_steps"] > 0
    scaled, euler, mine = (result.families[f] for f in families)
    assert "jac_rel_err" in scaled and "jac_rel_err" not in mine
    assert "upper_bound" in euler and "upper_bound" not in scaled
    # alpha = 1/N with a time-independent field is the Euler ResNet, h = 1/N.
    np.testing.assert_allclose(scaled["sigma_max"], euler["sigma_max"], rtol=1e-10)
    assert np.all(np.diff(np.log(scaled["jac_rel_err"])) < -1)  # O(1/N): 4x smaller
    for i, n in enumerate(steps):
        sv = cd.singular_values(UntiedStack(n), y)
        assert mine["sigma_min"][i] == pytest.approx(float(sv[-1]), rel=1e-12)
    assert result.horizon is None  # the first family has no horizon
    text = result.to_markdown()
    assert "Family: scaled" in text and "‖J_N−J_ode‖/‖J_ode‖" in text
    assert "mine σ_max" in text and "euler σ_min" in text
    assert text.count("\n| 8 |") == 2
    data = json.loads(result.to_json(tmp_path / "s.json"))
    assert list(data["families"]) == ["scaled", "euler", "mine"]
    fig = result.plot(tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 10_000
    import matplotlib.pyplot as plt

    plt.close(fig)
    compared = cd.depth_sweep(
        {"mine": families["mine"]}, y, steps=(2,), reference=cd.families.euler(
            field, 1.0).limit(y.dtype), compare="all", progress=False
    )
    assert "jac_rel_err" in compared.families["mine"]


def test_callable_fields_equal_linear_field(getkey):
    a = 0.5 * jr.normal(getkey(), (3, 3))
    y = jr.normal(getkey(), (3,))
    # The legacy call and the Euler family build equal models: compiled once per field.
    kwargs = dict(steps=(4,), progress=False)
    cols = ("sigma_max", "sigma_min", "jac_rel_err")
    expected = cd.depth_sweep(
        cd.LinearField(a), y, horizon=1.0, baselines=False, **kwargs
    )
    assert "upper_bound" in expected.families["euler"]
    for field in (lambda t, y, args: a @ y, ModuleField(a)):
        legacy = cd.depth_sweep(field, y, horizon=1.0, baselines=False, **kwargs)
        new = cd.depth_sweep({"euler": cd.families.euler(field, 1.0)}, y, **kwargs)
        for result in (legacy, new):
            for c in cols:
                np.testing.assert_allclose(
                    result.families["euler"][c], expected.families["euler"][c],
                    rtol=1e-12, atol=1e-14,
                )
            # No Lipschitz bound: no Grönwall columns, "n/a" in the header.
            assert "upper_bound" not in result.families["euler"]
            assert result.lipschitz == np.inf and "L = n/a" in result.to_markdown()
    out_rel_err = legacy.families["euler"]["out_rel_err"]
    np.testing.assert_allclose(
        out_rel_err, expected.families["euler"]["out_rel_err"], rtol=1e-10
    )


class _Compilations(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        message = record.getMessage()
        if "Compiling" in message or "Finished XLA compilation" in message:
            self.records.append(message)


def test_repeated_sweep_compiles_nothing(getkey):
    field = cd.MLPField(3, 4, 1, key=getkey())
    y = jr.normal(getkey(), (2, 3))
    key = getkey()

    def sweep():
        families = {
            "euler": cd.families.euler(field, 1.0),
            "plain": cd.families.plain(3, key),
            "branches": cd.families.random_branches(3, key, "1/sqrt(N)"),
        }
        return cd.depth_sweep(
            families, y, steps=(1, 3), batched=True, key=key, progress=False
        )

    handler = _Compilations()
    logger = logging.getLogger("jax")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with jax.log_compiles():
            t0 = time.perf_counter()
            first = sweep()
            t1 = time.perf_counter()
            compiled_first = len(handler.records)
            second = sweep()
            t2 = time.perf_counter()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert compiled_first > 0  # the guard sees compilations at all
    assert handler.records[compiled_first:] == []
    print(f"first call {t1 - t0:.2f} s, second call {t2 - t1:.3f} s")
    assert t2 - t1 < 0.25 * (t1 - t0)
    assert first.to_markdown() == second.to_markdown()


def test_family_builders(getkey):
    field = cd.MLPField(3, 8, 1, key=getkey())
    other = cd.MLPField(2, 8, 1, key=getkey())
    key = getkey()
    lip = float(field.lipschitz_bound())
    euler = cd.families.euler(field, 2.0)
    assert eqx.tree_equal(euler(4), cd.EulerResNet(field, 4, 2.0))
    assert eqx.tree_equal(euler, cd.families.euler(field, 2.0))
    upper, lower = euler.bounds(4)
    assert upper == pytest.approx((1 + 0.5 * lip) ** 4) and lower in (
        0.0, pytest.approx((1 - 0.5 * lip) ** 4)
    )
    ode = euler.limit(jnp.float64)
    assert ode.rtol == 1e-10 and ode.atol == 1e-12 and ode.max_steps == 100_000
    assert euler.limit(jnp.float32).rtol == 1e-6
    assert cd.families.euler(lambda t, y, args: -y, 1.0).bounds(4) is None
    assert eqx.tree_equal(cd.families.unscaled(field)(3), cd.EulerResNet(field, 3, 3.0))
    y = jr.normal(getkey(), (3,))
    plain = cd.families.plain(3, key)
    assert plain(5).num_layers == 5
    np.testing.assert_allclose(plain(5)(y), plain.traced_depth(5)(y), rtol=1e-14)
    branches = cd.families.random_branches(3, key, "1/sqrt(N)")
    assert float(branches(4).scale) == 0.5
    momentum = cd.families.momentum(field, 1.0, gamma=0.5, memory="store")
    assert eqx.tree_equal(
        momentum(4), cd.MomentumResNet(field, 4, 1.0, gamma=0.5, memory="store")
    )
    assert momentum.limit(jnp.float64).field is field
    reversible = cd.families.reversible(other, other, 1.0)
    assert isinstance(reversible(4), cd.ReversibleResNet)
    assert reversible(4).num_steps == 4
    assert reversible.limit(jnp.float64).field.field_a is other
    scaled = cd.families.scaled_residual(field, alpha=lambda n: 1 / n, beta=0.1)
    assert scaled(4).alpha == 0.25 and scaled(4).beta == 0.1 and scaled(4).tied
    fields = [cd.MLPField(3, 8, 1, key=k) for k in jr.split(getkey(), 4)]
    untied_scaled = cd.families.scaled_residual(fields=lambda n: fields[:n], alpha=0.5)
    assert not untied_scaled(4).tied
    highway = cd.families.highway(3, key)
    assert eqx.tree_equal(highway(4), cd.HighwayNet(3, 4, key=jr.fold_in(key, 4)))
    untied = cd.families.untied(lambda n: fields[:n], 1.0)
    assert untied(4).num_steps == 4 and untied(4).field.num_pieces == 4
    with pytest.raises(ValueError, match="`scale`"):
        cd.families.random_branches(3, key, "1/N^2")
    with pytest.raises(ValueError, match="exactly one"):
        cd.families.scaled_residual(alpha=1.0)


def test_bad_family_inputs(getkey):
    field = cd.MLPField(3, 8, 1, key=getkey())
    y = jr.normal(getkey(), (3,))
    families = {"euler": cd.families.euler(field, 1.0)}
    with pytest.raises(ValueError, match="`compare`"):
        cd.depth_sweep(families, y, steps=(2,), compare="nope", progress=False)
    with pytest.raises(TypeError, match="`baselines`"):
        cd.depth_sweep(families, y, steps=(2,), baselines=False, progress=False)
    with pytest.raises(ValueError, match="square Jacobian"):
        cd.depth_sweep({"bad": lambda n: lambda y, args=None: y[:2]}, y, steps=(2,),
                       progress=False)
    with pytest.raises(TypeError, match="not a model"):
        cd.depth_sweep({"bad": lambda n: 3}, y, steps=(2,), progress=False)
