"""The depth sweep: bounded spectra as N grows with T fixed, and the contrasts
(issue 3, items 4, 5, 8)."""

import json
import types

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import contdepth as cd
from contdepth._cli import main

from .helpers import make_reversible_model


STEPS = tuple(2**i for i in range(11))  # 1 ... 1024


@pytest.fixture(scope="module")
def field_and_state():
    key = jr.PRNGKey(42)
    field = cd.MLPField(4, 16, 1, key=key)
    y = jr.normal(jr.fold_in(key, 1), (4,))
    return field, y


@pytest.fixture(scope="module")
def sweep(field_and_state):
    field, y = field_and_state
    return cd.depth_sweep(field, y, horizon=1.0, steps=STEPS, progress=False)


def test_bounded_for_every_n_up_to_1024(field_and_state):
    # Every N in 1..1024 in one compiled, vmapped computation (a traced trip count),
    # checked against `cd.EulerResNet` at a few N.
    field, y = field_and_state
    horizon = 1.0
    lip = float(field.lipschitz_bound())

    def euler_jacobian(n):
        h = horizon / n

        def flow(y0):
            return lax.fori_loop(0, n, lambda k, z: z + h * field(k * h, z), y0)

        return jax.jacfwd(flow)(y)

    ns = np.arange(1, 1025)
    jacs = jax.jit(jax.vmap(euler_jacobian))(jnp.asarray(ns))
    for n in (1, 7, 100, 1024):
        ref = cd.jacobian(cd.EulerResNet(field, n, horizon), y)
        np.testing.assert_allclose(jacs[n - 1], ref, rtol=0, atol=1e-12)
    sv = np.linalg.svd(np.asarray(jacs), compute_uv=False)
    h = horizon / ns
    upper = (1 + h * lip) ** ns
    assert np.all(sv[:, 0] <= upper * (1 + 1e-12))
    assert np.all(upper <= np.exp(lip * horizon) * (1 + 1e-12))
    small = h * lip < 1
    assert small.sum() > 1000
    lower = (1 - h[small] * lip) ** ns[small]
    assert np.all(sv[small, -1] >= lower * (1 - 1e-12))
    assert lower[-1] == pytest.approx(np.exp(-lip * horizon), rel=1e-3)


def test_sweep_columns_and_first_order_convergence(sweep, field_and_state):
    field, y = field_and_state
    euler = sweep.families["euler"]
    # Columns equal independent computations.
    for i, n in enumerate(STEPS):
        if n in (1, 64, 1024):
            sv = cd.singular_values(cd.EulerResNet(field, n, 1.0), y)
            assert euler["sigma_max"][i] == pytest.approx(float(sv[0]), rel=1e-12)
            assert euler["sigma_min"][i] == pytest.approx(float(sv[-1]), rel=1e-12)
    assert np.all(euler["sigma_max"] <= euler["upper_bound"] * (1 + 1e-12))
    assert np.all(euler["upper_bound"] <= np.exp(sweep.lipschitz))
    ok = euler["lower_bound"] > 0
    assert np.all(euler["sigma_min"][ok] >= euler["lower_bound"][ok] * (1 - 1e-12))
    ns = np.asarray(STEPS)
    fit = ns >= 8
    slope = np.polyfit(np.log(ns[fit]), np.log(euler["jac_rel_err"][fit]), 1)[0]
    assert -1.1 <= slope <= -0.9, slope
    slope = np.polyfit(np.log(ns[fit]), np.log(euler["out_rel_err"][fit]), 1)[0]
    assert -1.1 <= slope <= -0.9, slope
    # ... towards the ODE flow Jacobian's spectrum.
    assert euler["sigma_max"][-1] == pytest.approx(sweep.reference["sigma_max"], rel=1e-2)
    assert euler["sigma_min"][-1] == pytest.approx(sweep.reference["sigma_min"], rel=1e-2)


def test_contrasts_unscaled_explodes_plain_vanishes(sweep):
    unscaled = sweep.families["unscaled"]
    amplification = np.maximum(unscaled["sigma_max"], 1 / unscaled["sigma_min"])
    # Unbounded in N and far beyond the Euler family's bound exp(LT). (Along an escaping
    # trajectory of a bounded tanh field J_F -> 0, so this growth is polynomial, not
    # geometric; geometric growth is asserted at a fixed point below.)
    assert np.all(np.diff(np.log(amplification))[2:] > 0)
    assert amplification[-1] > 1e3 * np.exp(sweep.lipschitz)
    euler = sweep.families["euler"]
    assert np.max(euler["cond"]) < np.exp(2 * sweep.lipschitz)
    plain = sweep.families["plain"]
    assert plain["sigma_min"][-1] < 1e-30
    assert np.all(np.diff(np.log(np.maximum(plain["sigma_max"], 1e-300))[4:]) < 0)
    # Random depth-varying branches: 1/N averages them out (J -> I), 1/sqrt(N) does not.
    one_over_n = sweep.families["branch_1/N"]
    one_over_sqrt = sweep.families["branch_1/sqrt(N)"]
    assert abs(one_over_n["sigma_max"][-1] - 1) < 0.1
    assert abs(one_over_n["sigma_min"][-1] - 1) < 0.1
    assert one_over_sqrt["cond"][-1] > 1.5
    assert one_over_sqrt["cond"][-1] < 1e3


def test_linear_unscaled_growth_is_exactly_geometric(getkey):
    a = jnp.diag(jnp.array([0.5, -0.2, 0.1]))
    y = jr.normal(getkey(), (3,))
    result = cd.depth_sweep(
        cd.LinearField(a), y, horizon=1.0, steps=(1, 2, 4, 8, 16), progress=False
    )
    np.testing.assert_allclose(
        result.families["unscaled"]["sigma_max"], 1.5 ** np.array([1, 2, 4, 8, 16]),
        rtol=1e-12,
    )


def test_unscaled_growth_is_geometric_at_a_fixed_point(getkey):
    # Zero biases make y = 0 a fixed point of a tanh MLP field: the unscaled Jacobian is
    # (I + J_F(0))^N, whose extreme singular values grow/decay like rho^N.
    field = cd.MLPField(4, 16, 1, key=getkey())
    field = jax.tree.map(
        lambda x: jnp.zeros_like(x) if eqx.is_array(x) and x.ndim == 1 else x, field
    )
    y = jnp.zeros(4)
    ns = (64, 128, 256)
    result = cd.depth_sweep(field, y, horizon=1.0, steps=ns, progress=False)
    u = result.families["unscaled"]
    eig = np.abs(np.linalg.eigvals(np.eye(4) + np.asarray(cd.jacobian(
        lambda z, args=None: field(0.0, z), y))))
    # sigma_max^(1/N) -> spectral radius of I + J_F(0). (sigma_min would need a
    # resolution below eps * sigma_max, which a float64 SVD does not have.)
    rate = np.log(u["sigma_max"]) / np.asarray(ns)
    expected = np.log(eig.max())
    assert expected > 0.05
    np.testing.assert_allclose(rate[-1], expected, rtol=0.05)
    assert np.all(np.diff(rate) > -0.05 * expected)


def test_matrix_free_sweep_matches_dense(field_and_state):
    field, y = field_and_state
    kwargs = dict(horizon=1.0, steps=(16,), baselines=False, progress=False)
    dense = cd.depth_sweep(field, y, method="dense", **kwargs)
    free = cd.depth_sweep(field, y, method="matrix_free", **kwargs)
    for col in ("sigma_max", "sigma_min", "jac_rel_err", "out_rel_err"):
        np.testing.assert_allclose(
            free.families["euler"][col], dense.families["euler"][col], rtol=1e-8
        )
    # Matrix-free rows carry their Lanczos error bounds; the dense values lie within.
    for col in ("sigma_max", "sigma_min", "jac_rel_err"):
        value, bound = free.families["euler"][col], free.families["euler"][f"{col}_bound"]
        exact = dense.families["euler"][col]
        assert np.all(bound >= 0)
        assert np.all(np.abs(exact - value) <= bound + 1e-10 * np.abs(exact))
        assert f"{col}_bound" not in dense.families["euler"]
    assert free.reference["sigma_min_bound"] >= 0
    text = free.to_markdown()
    assert "± σ_max" in text and "± ‖J_N−J_ode‖/‖J_ode‖" in text


def test_batched_sweep_is_worst_case_and_model_input(getkey):
    field = cd.MLPField(3, 8, 1, key=getkey())
    ys = jr.normal(getkey(), (3, 3))
    model = cd.EulerResNet(field, 4, 0.5)
    batched = cd.depth_sweep(
        model, ys, steps=(4,), batched=True, baselines=False, progress=False
    )
    assert batched.horizon == 0.5 and batched.num_states == 3
    singles = [
        cd.depth_sweep(model, y, steps=(4,), baselines=False, progress=False) for y in ys
    ]
    for col, reduce in (("sigma_max", max), ("sigma_min", min), ("cond", max)):
        expected = reduce(s.families["euler"][col][0] for s in singles)
        assert batched.families["euler"][col][0] == pytest.approx(expected, rel=1e-12)


def test_conv_states_sweep_without_vector_baselines(getkey):
    field = cd.ConvField(2, width=3, key=getkey())
    y = jr.normal(getkey(), (2, 4, 4))
    result = cd.depth_sweep(field, y, horizon=1.0, steps=(2,), progress=False)
    assert set(result.families) == {"euler", "unscaled"}
    assert result.dim == 32


def test_result_outputs(sweep, tmp_path):
    text = sweep.to_markdown()
    assert "σ_max" in text and "‖J_N−J_ode‖/‖J_ode‖" in text and "plain" in text
    assert text.count("\n| 1024 |") == 2
    data = json.loads(sweep.to_json(tmp_path / "s.json"))
    assert data["steps"] == list(STEPS)
    assert json.loads((tmp_path / "s.json").read_text()) == data
    assert len(data["families"]["euler"]["sigma_max"]) == len(STEPS)
    fig = sweep.plot(tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 10_000
    import matplotlib.pyplot as plt

    plt.close(fig)
    extra = sweep.with_column("euler", "accuracy", np.ones(len(STEPS)))
    assert "test acc" in extra.to_markdown()
    with pytest.raises(ValueError, match="one entry per N"):
        sweep.with_column("euler", "accuracy", [1.0])
    with pytest.raises(KeyError, match="family"):
        sweep.column("nope", "sigma_max")


def test_bad_sweep_inputs(field_and_state):
    field, y = field_and_state
    with pytest.raises(ValueError, match="`steps`.*positive integers"):
        cd.depth_sweep(field, y, horizon=1.0, steps=(4, 0))
    with pytest.raises(ValueError, match="`steps`.*positive integers"):
        cd.depth_sweep(field, y, horizon=1.0, steps=(2.5,))
    with pytest.raises(TypeError, match="`steps`"):
        cd.depth_sweep(field, y, horizon=1.0, steps=8)
    with pytest.raises(ValueError, match="`horizon`"):
        cd.depth_sweep(field, y, horizon=0.0)
    with pytest.raises(ValueError, match="`horizon` is required"):
        cd.depth_sweep(field, y)
    with pytest.raises(ValueError, match=r"`y`.*shape"):
        cd.depth_sweep(field, jnp.ones(5), horizon=1.0)
    with pytest.raises(ValueError, match="`method`"):
        cd.depth_sweep(field, y, horizon=1.0, method="fast")
    with pytest.raises(TypeError, match="`field_or_model`"):
        cd.depth_sweep("mlp", y, horizon=1.0)


def test_cli_sweep_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main([
        "sweep", "--steps", "8,32", "--train-steps", "60", "--dim", "8", "--width", "16",
        "--num-states", "2", "--out", str(out), "--no-progress",
    ])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "test acc" in printed and "| 32 |" in printed
    data = json.loads((out / "sweep.json").read_text())
    assert data["steps"] == [8, 32]
    acc = data["families"]["euler"]["accuracy"]
    assert all(0.5 < a <= 1 for a in acc)  # 60 steps already learn digits well above chance
    assert (out / "sweep.png").stat().st_size > 10_000
    with pytest.raises(SystemExit):
        main(["sweep", "--steps", "8,x", "--out", str(out)])


@pytest.mark.parametrize("kind", ["momentum", "reversible"])
def test_reversible_models_plug_into_the_sweep(kind, getkey):
    model = make_reversible_model(kind, getkey())
    y = jr.normal(getkey(), (4,))
    result = cd.depth_sweep(model, y, steps=(6, 48, 384), baselines=False, progress=False)
    assert result.meta["model"] == kind and kind in result.to_markdown()
    err = result.families["euler"]["jac_rel_err"]
    ratios = err[:-1] / err[1:]  # N grows 8x per entry: first order means ~8x smaller
    assert np.all((ratios > 6) & (ratios < 10)), ratios
    sv = cd.singular_values(model.with_memory("store"), y)
    assert result.families["euler"]["sigma_max"][0] == pytest.approx(float(sv[0]), rel=1e-10)
    if kind == "reversible":  # volume preserving: det J = 1
        assert np.prod(np.asarray(sv)) == pytest.approx(1.0, rel=1e-10)


def test_markdown_marks_unconverged_roundoff_and_non_finite_entries():
    # Issue "Trust", item 1: flagged entries are marked, with a legend only when needed.
    from contdepth._sweep.result import DepthSweep

    families = {"euler": {
        "sigma_max": np.array([2.0, 3.0, np.inf]),
        "sigma_min": np.array([0.5, 1e-20, np.nan]),
        "cond": np.array([4.0, 3e20, np.inf]),
        "sigma_max_bound": np.array([1e-9, 1e-9, 0.0]),
        "converged": np.array([0.0, 1.0, 1.0]),
    }}
    result = DepthSweep(steps=(1, 2, 4), horizon=1.0, dim=3, num_states=1,
                        lipschitz=1.0, families=families, reference={},
                        meta={"dtype": "float64"})
    text = result.to_markdown()
    assert "| 1 | 1 | 2† |" in text and "0.5† | 4† |" in text
    assert "1e-20‡ | 3e+20‡ |" in text
    assert "| 4 | 0.25 | —(inf) | 0 | —(nan) | —(inf) |" in text
    assert "† Lanczos did not converge" in text and "‡ σ_min < eps·σ_max" in text
    flags = json.loads(result.to_json())["flags"]["euler"]
    assert flags == {"unconverged": [True, False, False], "roundoff": [False, True, False],
                     "non_finite": [False, False, True]}
    clean = DepthSweep(steps=(1,), horizon=1.0, dim=3, num_states=1, lipschitz=1.0,
                       families={"euler": {"sigma_max": np.array([2.0]),
                                           "sigma_min": np.array([0.5])}},
                       reference={}, meta={"dtype": "float64"})
    assert "†" not in clean.to_markdown() and "Lanczos" not in clean.to_markdown()


def test_matrix_free_rows_record_convergence(field_and_state):
    field, y = field_and_state
    free = cd.depth_sweep(field, y, horizon=1.0, steps=(4,), baselines=False,
                          progress=False, method="matrix_free")
    assert free.families["euler"]["converged"].tolist() == [1.0]
    assert free.reference["converged"] is True  # the reference's Lanczos runs too
    assert "†" not in free.to_markdown()


def test_traced_depth_euler_equals_compiled_per_depth():
    # `contdepth sweep` evaluates every depth with one compiled program (a traced N):
    # the same float ops as `EulerResNet`'s scan, so bitwise the same numbers.
    from contdepth._sweep.families import (
        EulerFamily,
        TracedEulerResNet,
        UnscaledFamily,
    )
    from contdepth._sweep.legacy import _UnitStep
    from contdepth._sweep.measure import dense_point
    from contdepth._train.evaluate import evaluate

    key = jr.PRNGKey(3)
    clf = cd.make_classifier("euler", num_features=6, num_classes=3, dim=5, width=8,
                             depth=4, horizon=0.7, key=key)
    x = jr.normal(jr.fold_in(key, 1), (40, 6))
    labels = jr.randint(jr.fold_in(key, 2), (40,), 0, 3)
    field = clf.body.field
    family = EulerFamily(field, 0.7)
    ys = jax.vmap(clf.features)(x[:3])
    for n in (1, 3, 8, 100):
        traced = family.traced_depth(n)
        assert isinstance(traced, TracedEulerResNet)
        static = family(n)
        for y in ys:
            assert jnp.array_equal(static(y), traced(y))
            assert jnp.array_equal(cd.jacobian(static, y), cd.jacobian(traced, y))
        got = [dense_point(m, ys, None, None, None) for m in (static, traced)]
        for k in got[0]:
            assert jnp.array_equal(got[0][k], got[1][k])
        with_body = [eqx.tree_at(lambda c: c.body, clf, m) for m in (static, traced)]
        results = [evaluate(c, (x, labels)) for c in with_body]
        assert results[0] == results[1]
    for unit in (UnscaledFamily(field), _UnitStep(family)):
        for n in (2, 16):
            assert jnp.array_equal(unit(n)(ys[0]), unit.traced_depth(n)(ys[0]))
    # Wrapping a family without `traced_depth`: none either (every depth compiled).
    assert _UnitStep(cd.families.momentum(field, 0.7, gamma=0.5)).traced_depth is None


def test_reference_from_one_program_equals_separate_measurements():
    from contdepth._sweep.families import tight_ode
    from contdepth._sweep.measure import dense_reference, outputs, solver_steps

    key = jr.PRNGKey(4)
    ode = tight_ode(cd.MLPField(4, 8, 1, key=key), 1.0, jnp.float32)
    ys = jr.normal(jr.fold_in(key, 1), (3, 4))
    jac, sv, out, steps = dense_reference(ode, ys, None, True)
    assert jnp.array_equal(jac, jax.vmap(lambda y: cd.jacobian(ode, y))(ys))
    assert jnp.array_equal(sv, jnp.linalg.svd(jac, compute_uv=False))
    assert jnp.array_equal(out, outputs(ode, ys, None))
    assert jnp.array_equal(steps, solver_steps(ode, ys, None))


def test_refined_family_is_refine_depth_with_one_program():
    # `families.refined(net)` at N = r N_train is `refine_depth(net, r)`, and so is its
    # traced depth (one compiled program for every N), for every init.
    from contdepth._sweep.refined import TracedRefinedResNet

    y = jnp.asarray([0.3, -1.2, 0.7, 0.1, -0.5, 2.0])
    run = eqx.filter_jit(lambda model: model(y))  # compiled once per structure
    for i, init in enumerate(("smooth", "iid")):
        key = jr.PRNGKey(10 + i)
        # The sizes of the next test's nets: their random draws compile once.
        net = cd.untied_resnet(key, dim=6, hidden=8, num_layers=4, init=init)
        # Move V off zero (as training does) so the smooth net is not the identity.
        net = eqx.tree_at(lambda m: m.fields.V, net,
                          net.fields.V + jr.normal(jr.fold_in(key, 1), (4, 6, 8)))
        family = cd.families.refined(net)
        assert family(4) is net
        static, traced = family(16), family.traced_depth(16)  # r = 4
        assert isinstance(traced, TracedRefinedResNet) and static.num_layers == 16
        # One structure for every depth: one compiled program.
        assert jax.tree.structure(traced) == jax.tree.structure(family.traced_depth(8))
        want = run(cd.refine_depth(net, 4, beta=1.0))
        assert jnp.array_equal(run(static), want)
        # The same arithmetic; XLA may fuse the interpolation differently (ulps).
        assert jnp.allclose(run(traced), want, rtol=1e-13, atol=0)
        with pytest.raises(ValueError, match="multiples of 4"):
            family(6)
    bad = cd.untied_resnet(jr.PRNGKey(0), dim=3, hidden=4, num_layers=4, beta=0.5)
    with pytest.raises(ValueError, match="beta=1"):
        cd.families.refined(bad)


def test_untied_runs_converge_but_differ_in_regularity():
    # Smooth and iid untied nets both converge to their own ODEs at O(1/N); what tells
    # them apart is the weights' regularity in depth and the gap at the trained depth.
    from contdepth._sweep.untied_job import (
        frozen_alpha,
        sweep_untied,
        untied_keys,
        untied_markdown,
    )

    train_data, test_data = cd.datasets.digits()
    test_data = (test_data[0][:60], test_data[1][:60])
    k_model, k_train, k_sweep = jr.split(jr.PRNGKey(0), 3)
    template = cd.make_classifier("euler", num_features=64, num_classes=10, dim=6,
                                  width=8, depth=4, key=k_model)
    optimizer = frozen_alpha(optax.adam(3e-3))
    steps = (4, 8, 16, 32)
    runs = {
        init: sweep_untied(
            template, init, width=8, train_depth=4, steps=steps, train_data=train_data,
            test_data=test_data, train_steps=40, num_states=2, optimizer=optimizer,
            keys=untied_keys(k_model, k_train, k_sweep), progress=False,
        )
        for init in ("smooth", "iid")
    }
    for cols, summary in runs.values():
        err = cols["out_rel_err"]
        assert np.all(err[1:] < 0.65 * err[:-1])  # converges ...
        assert 0.4 < err[-1] / err[-2] < 0.6  # ... at first order
        assert -1.4 < summary["order"] < -0.8
        assert summary["gap_at_train_depth"] == err[0]
        assert all(0.5 < a <= 1 for a in cols["accuracy"])  # well above chance (0.1)
        assert np.all(cols["sigma_max"] < 2 * summary["ode"]["sigma_max"])
        assert np.all(cols["sigma_min"] > 0.5 * summary["ode"]["sigma_min"])
    (_, smooth), (_, iid) = runs["smooth"], runs["iid"]
    assert smooth["regularity_at_init"]["max_increment"] == 0.0  # tied W, V = 0
    for when in ("regularity_at_init", "regularity_trained"):
        assert iid[when]["max_increment"] > 5 * smooth[when]["max_increment"]
        assert iid[when]["h1_norm"] > 2 * smooth[when]["h1_norm"]
    assert iid["gap_at_train_depth"] > 3 * smooth["gap_at_train_depth"]
    sweep = types.SimpleNamespace(
        steps=steps, families={f"untied {i}": cols for i, (cols, _) in runs.items()}
    )
    text = untied_markdown(sweep, {i: s for i, (_, s) in runs.items()}, 4)
    last = runs["smooth"][0]["out_rel_err"][-1]
    assert "| untied iid |" in text and f"| 32 | {last:.4g} |" in text
    assert f"{smooth['gap_at_train_depth']:.4g}" in text


def test_cli_sweep_untied_flag():
    from contdepth._cli import build_parser
    from contdepth._sweep.job import learned_depth_sweep

    parse = build_parser().parse_args
    assert parse(["sweep"]).untied == []  # opt-in: the default sweep stays fast
    assert parse(["sweep", "--untied", "smooth", "iid"]).untied == ["smooth", "iid"]
    with pytest.raises(SystemExit):
        parse(["sweep", "--untied", "gaussian"])
    with pytest.raises(ValueError, match="multiples of 4"):  # checked before training
        learned_depth_sweep(steps=(4, 6), train_depth=4, untied=("iid",))
    with pytest.raises(ValueError, match="initialisations from"):
        learned_depth_sweep(untied=("gaussian",))
