"""`stability_report`: eigenvalues classified against the exact flow, the largest stable
step of every method, a step-relative round-off tolerance, and the plot."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib
import numpy as np
import pytest

import contdepth as cd


STABLE, GROWTH, UNSTABLE = 0, 1, 2


def _antisymmetric(b=(1.0, 2.5)):
    # Block-diagonal rotations: eigenvalues +-i b_k, exactly.
    blocks = [np.array([[0.0, bk], [-bk, 0.0]]) for bk in b]
    a = np.zeros((2 * len(b), 2 * len(b)))
    for k, blk in enumerate(blocks):
        a[2 * k : 2 * k + 2, 2 * k : 2 * k + 2] = blk
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal(a.shape))
    return cd.LinearField(jnp.asarray(q @ a @ q.T))  # still antisymmetric


def test_antisymmetric_euler_is_never_stable_rk4_is():
    b = (1.0, 2.5)
    field, h = _antisymmetric(b), 0.2
    y = jnp.ones(4)
    report = cd.stability_report(field, y, h)
    assert int(report.num_unstable) == 4 and bool(jnp.all(report.unstable))
    assert bool(jnp.all(report.classification == UNSTABLE))
    np.testing.assert_allclose(
        np.sort(np.asarray(report.amplification)),
        np.sort(np.sqrt(1 + h**2 * np.repeat(b, 2) ** 2)), rtol=1e-13,
    )
    # No Euler or RK2 step is stable on the imaginary axis.
    np.testing.assert_array_equal(report.step_limits, 0.0)
    assert float(report.max_stable_step) == 0.0
    assert float(report.max_stable_steps["heun"]) == 0.0
    assert float(report.max_stable_steps["midpoint"]) == 0.0
    # RK4 is stable for |h b| <= 2 sqrt(2): h <= 2 sqrt(2) / max b.
    np.testing.assert_allclose(report.max_stable_steps["rk4"], 2 * np.sqrt(2) / max(b),
                               rtol=1e-12)
    assert int(report.num_unstable_by_method["rk4"]) == 0
    assert report.stable_methods() == ("rk4",)
    assert report.suggested_method() == "rk4"
    text = report.summary(horizon=2.0)
    assert "never stable for purely imaginary" in text
    assert "'rk4'" in text and "|h lambda| <= 2.83" in text
    steps = math.ceil(2.0 / (2 * np.sqrt(2) / max(b)))
    assert f"num_steps >= {steps} for T = 2" in text
    # Beyond 2 sqrt(2) / max b RK4 is unstable too: nothing is stable at h = 1.5.
    big = cd.stability_report(field, y, 1.5, "rk4")
    assert int(big.num_unstable) == 2 and big.stable_methods() == ()
    assert big.suggested_method() == "rk4"
    assert "reduce the step to h <= 1.13137" in big.summary()


def test_positive_real_eigenvalues_grow_as_the_flow():
    field = cd.LinearField(jnp.array([[0.5, 1.0], [0.0, 2.0]]))
    for method in ("euler", "rk4"):
        report = cd.stability_report(field, jnp.ones(2), 0.3, method)
        assert int(report.num_unstable) == 0 and int(report.num_growth) == 2
        np.testing.assert_array_equal(report.classification, GROWTH)
        # The step under-amplifies the growing flow: |R(z)| < e^z for real z > 0.
        assert bool(jnp.all(report.amplification < report.flow_amplification))
        assert float(report.max_stable_step) == np.inf
        assert "stable for any step" in report.summary()


@pytest.mark.parametrize("a", [0.5, 3.0])
def test_negative_real_eigenvalue_max_step(a):
    field = cd.LinearField(jnp.array([[-a]]))
    report = cd.stability_report(field, jnp.ones(1), 0.1)
    # RK4's real boundary: R(z) = 1 at z != 0, i.e. 1 + z/2 + z^2/6 + z^3/24 = 0.
    roots = np.roots([1 / 24, 1 / 6, 1 / 2, 1])
    rk4_edge = -roots[np.abs(roots.imag) < 1e-12].real.min()
    np.testing.assert_allclose(rk4_edge, 2.785293563405282, rtol=1e-12)
    np.testing.assert_allclose(report.max_stable_step, 2 / a, rtol=1e-13)
    expected = {"euler": 2 / a, "heun": 2 / a, "midpoint": 2 / a, "rk4": rk4_edge / a}
    for m, v in expected.items():
        np.testing.assert_allclose(report.max_stable_steps[m], v, rtol=1e-12)
    # Just past Euler's limit: flagged, and RK4 would still be stable.
    past = cd.stability_report(field, jnp.ones(1), 2.1 / a)
    assert int(past.num_unstable) == 1 and past.suggested_method() == "rk4"
    text = past.summary(horizon=10.0)
    assert f"reduce the step to h <= {2 / a:.6g}" in text
    assert f"num_steps >= {math.ceil(10 * a / 2)} for T = 10" in text


def test_float32_small_drift_is_reported():
    # |R(i h b)| = sqrt(1 + (h b)^2) = 1.000008 for h b = 0.004; 1000 eps hid it.
    field = cd.LinearField(jnp.array([[0.0, 4.0], [-4.0, 0.0]], jnp.float32))
    y = jnp.ones(2, jnp.float32)
    report = cd.stability_report(field, y, 1e-3)
    assert report.amplification.dtype == jnp.float32
    np.testing.assert_allclose(report.amplification, np.sqrt(1 + 0.004**2), rtol=1e-7)
    eps32 = float(jnp.finfo(jnp.float32).eps)
    assert float(report.amplification[0]) - 1 < 1000 * eps32  # the old default
    assert bool(jnp.all(report.tol < 8e-6 / 4))
    assert int(report.num_unstable) == 2
    assert report.suggested_method() == "rk4"
    # RK2's excess (h b)^4 / 8 = 3e-11 is below float32 resolution: not flagged, but
    # no step is stable for it, so it is not offered as stable at this step.
    assert int(report.num_unstable_by_method["heun"]) == 0
    assert float(report.max_stable_steps["heun"]) == 0.0
    assert report.stable_methods() == ("rk4",)


def test_float32_roundoff_of_a_stable_case_is_not_flagged():
    # Symmetric negative definite, rotated so eig has round-off; Euler exactly on its
    # boundary z = -2 for the largest eigenvalue, and RK4 on a rotation.
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    a = np.array([8.0, 5.0, 3.0, 1.0, 0.5, 0.1])
    field = cd.LinearField(jnp.asarray(-(q * a) @ q.T, jnp.float32))
    y = jnp.ones(6, jnp.float32)
    report = cd.stability_report(field, y, 2 / 8.0)
    assert int(report.num_unstable) == 0 and report.stable_methods()[0] == "euler"
    # |R| = 1 + 4.8e-7 from eig round-off: flagged without the tolerance.
    assert float(jnp.max(report.amplification)) > 1
    assert int(cd.stability_report(field, y, 2 / 8.0, tol=0.0).num_unstable) == 1
    np.testing.assert_allclose(report.max_stable_step, 0.25, rtol=1e-5)
    rot = _antisymmetric()
    rot32 = cd.LinearField(rot.matrix.astype(jnp.float32))
    for h in (1e-3, 0.5):
        rk4 = cd.stability_report(rot32, jnp.ones(4, jnp.float32), h, "rk4")
        assert int(rk4.num_unstable) == 0 and rk4.suggested_method() == "rk4"


def test_plot_writes_a_png(tmp_path):
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = cd.stability_report(_antisymmetric(), jnp.ones(4), 0.2)
    ax = report.plot()
    assert isinstance(ax, matplotlib.axes.Axes)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("rk4" in s for s in labels)  # the suggested method's region
    assert any("discretisation instability (4)" in s for s in labels)
    path = tmp_path / "report.png"
    ax.figure.savefig(path)
    assert path.stat().st_size > 1000
    plt.close(ax.figure)


def test_under_jit_and_vmap(getkey):
    field = cd.MLPField(4, 16, 1, key=getkey())
    ys = jr.normal(getkey(), (3, 4))
    batched = jax.vmap(lambda y: cd.stability_report(field, y, 0.7))(ys)
    one = cd.stability_report(field, ys[1], 0.7)
    np.testing.assert_allclose(batched.amplification[1], one.amplification, rtol=1e-12)
    np.testing.assert_array_equal(batched.classification[1], one.classification)
    np.testing.assert_allclose(batched.max_stable_steps["rk4"][1],
                               one.max_stable_steps["rk4"], rtol=1e-12)
    jitted = eqx.filter_jit(lambda y: cd.stability_report(field, y, 0.7))(ys[1])
    np.testing.assert_allclose(jitted.step_limits, one.step_limits, rtol=1e-12)
    assert "euler" in repr(one)


def test_bad_growth_rtol():
    with pytest.raises((TypeError, ValueError), match="growth_rtol"):
        cd.stability_report(cd.LinearField(-jnp.eye(2)), jnp.ones(2), 0.1,
                            growth_rtol=-1.0)
