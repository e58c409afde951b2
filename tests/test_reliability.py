"""Reliability (issue 5): solver failures give the documented error or result code,
float32 agrees with float64, float64 is never silently downcast, and training is
deterministic and refuses to continue past a NaN."""

import re

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import contdepth as cd

from .helpers import make_model, MODEL_KINDS


class NaNField(cd.AbstractVectorField):
    """`dy/dt = -y` until `t_bad`, NaN after: a NaN injected into the state mid-solve."""

    t_bad: float = eqx.field(static=True)

    def __call__(self, t, y, args=None):
        return jnp.where(t > self.t_bad, jnp.nan, -y)

    def check_state(self, y, name="y"):
        pass

    def lipschitz_bound(self):
        return jnp.asarray(1.0)


# Eigenvalues -1, -1e4, -1e6: an explicit solver's stability limit forces h ~ 3e-6.
STIFF = cd.LinearField(-jnp.diag(jnp.array([1.0, 1e4, 1e6])))

FAILURES = {
    "max_steps": (
        lambda **kw: cd.NeuralODE(cd.MLPField(3, 8, 1, key=jr.PRNGKey(0)), 1.0,
                                  rtol=1e-12, atol=1e-12, max_steps=3, **kw),
        r"maximum number of solver steps \(`max_steps=3`\) was reached.*raise `max_steps`",
    ),
    "stiff": (
        lambda **kw: cd.NeuralODE(STIFF, 1.0, rtol=1e-8, atol=1e-10, max_steps=256, **kw),
        r"`max_steps=256`\) was reached: the step size collapsed \(a stiff.*"
        r"loosen `rtol`/`atol` \(now 1e-08/1e-10.*implicit solver.*Kvaerno5",
    ),
    "nan_field": (
        lambda **kw: cd.NeuralODE(NaNField(0.5), 1.0, max_steps=256, **kw),
        r"the vector field returned NaN or inf there.*Raising `max_steps` will not help",
    ),
}
EXACT_T = {"max_steps": r"at t = 0\.\d+ \(horizon 1\) after 3 steps",
           "nan_field": r"at t = 0\.5 \(horizon 1\) after 256 steps"}
# Under jit nothing is diagnosed on the success path, so the message names the result
# code and points to `model.diagnose`, which gives the exact time and cause.
JIT_MESSAGE = (
    r"solve failed: the maximum number of solver steps \(`max_steps=\d+`\) was reached"
    r".*a vector field returning NaN/inf also ends in `max_steps`.*model.diagnose\(y, args\)"
)


@pytest.mark.parametrize("name", FAILURES)
def test_solver_failure_raises_the_documented_error(name):
    make, message = FAILURES[name]
    ode, y = make(), jnp.ones(3)
    if name != "stiff":  # (slow eagerly: 256 steps op by op)
        with pytest.raises(eqx.EquinoxRuntimeError, match=EXACT_T[name] + ".*" + message):
            ode(y)
    with pytest.raises(eqx.EquinoxRuntimeError, match=JIT_MESSAGE):
        eqx.filter_jit(ode)(y)
    if name != "stiff":
        assert re.search(EXACT_T[name] + ".*" + message, ode.diagnose(y))
    # throw=False: NaN output and diffrax's result code, nothing silently wrong.
    quiet = make(throw=False)
    out, result = eqx.filter_jit(quiet.solve_with_result)(y)
    assert result == diffrax.RESULTS.max_steps_reached
    assert not diffrax.is_successful(result)
    assert bool(jnp.all(jnp.isnan(out)))


def test_an_implicit_solver_fixes_the_stiff_failure():
    y = jnp.ones(3)
    stiff = cd.NeuralODE(STIFF, 1.0, rtol=1e-8, atol=1e-10, max_steps=256,
                         solver=diffrax.Kvaerno5())
    exact = jnp.exp(-jnp.array([1.0, 1e4, 1e6]))  # expm(-diag(λ)) y0 with y0 = 1
    np.testing.assert_allclose(eqx.filter_jit(stiff)(y), exact, rtol=1e-6, atol=1e-12)


def test_nonfinite_initial_state():
    ode = cd.NeuralODE(cd.MLPField(3, 8, 1, key=jr.PRNGKey(0)), 1.0)
    y = jnp.array([1.0, jnp.nan, 0.0])
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"initial state `y` contains NaN"):
        ode(y)
    out, result = eqx.filter_jit(ode.solve_with_result)(y)
    assert result == diffrax.RESULTS.max_steps_reached and bool(jnp.all(jnp.isnan(out)))


def test_fixed_step_blow_up_is_reported():
    # Forward Euler with h = 0.5 on y' = -10 y: |1 - 5| = 4 per step, inf after ~600.
    field = cd.LinearField(-10.0 * jnp.eye(2))
    def make(**kw):
        return cd.NeuralODE(field, 500.0, solver=diffrax.Euler(), dt0=0.5,
                            max_steps=2000, **kw)

    with pytest.raises(eqx.EquinoxRuntimeError,
                       match=r"final state contains NaN or inf.*reduce `dt0`"):
        make()(jnp.ones(2))
    quiet = make(throw=False)
    assert not bool(jnp.all(jnp.isfinite(eqx.filter_jit(quiet)(jnp.ones(2)))))


def _cast(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, tree)


def _model(kind, key):
    model, y = make_model(kind, key)
    if kind == "ode":  # tolerances float32 can meet
        model = cd.NeuralODE(model.field, 1.0, rtol=1e-7, atol=1e-9)
    return model, y


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_float32_agrees_with_float64_and_float64_is_kept(kind, getkey):
    model64, y64 = _model(kind, getkey())
    model32, y32 = _cast(model64, jnp.float32), y64.astype(jnp.float32)
    call = eqx.filter_jit(lambda model, y: model(y))
    out64 = call(model64, y64)
    out32 = call(model32, y32)
    assert out64.dtype == jnp.float64 and out32.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(out64)))
    # A few float32 roundings per layer: well within 1e-5 relative.
    assert float(jnp.max(jnp.abs(out32 - out64))) <= 1e-5 * scale
    # float64 input, float32 weights: computed in float64 (bit-equal to upcasting the
    # weights), never rounded through float32.
    mixed = call(model32, y64)
    assert mixed.dtype == jnp.float64
    np.testing.assert_array_equal(mixed, call(_cast(model32, jnp.float64), y64))


def test_classifier_keeps_float64(getkey):
    model = cd.make_classifier("euler", num_features=3, num_classes=2, dim=4, width=4,
                               depth=2, key=getkey())
    model32 = _cast(model, jnp.float32)
    x = jr.normal(getkey(), (3,))
    assert model32(x).dtype == jnp.float64
    np.testing.assert_array_equal(model32(x), _cast(model32, jnp.float64)(x))


@pytest.mark.slow
def test_float16_states_are_integrated_in_float32(getkey):
    model64, y = _model("ode", getkey())
    out16 = _cast(model64, jnp.float16)(y.astype(jnp.float16))
    assert out16.dtype == jnp.float16
    np.testing.assert_allclose(out16.astype(jnp.float64), model64(y), rtol=2e-2, atol=2e-2)


@pytest.fixture(scope="module")
def blobs():
    from .test_checkpoint import _blobs

    return _blobs()


@pytest.mark.slow
def test_same_key_gives_bit_identical_training_of_a_neural_ode(blobs):
    def run():
        model = cd.make_classifier("ode", num_features=2, num_classes=2, dim=2, width=2,
                                   key=jr.PRNGKey(0))
        return cd.train(model, blobs, steps=2, batch_size=20, key=jr.PRNGKey(1),
                        progress=False)

    (a, ha), (b, hb) = run(), run()
    assert eqx.tree_equal(a, b, typematch=True)
    np.testing.assert_array_equal(ha["loss"], hb["loss"])


def test_training_stops_on_divergence_and_refuses_nan_data(blobs, tmp_path):
    x, y = blobs
    model = cd.make_classifier("plain", num_features=2, num_classes=2, dim=3, width=4,
                               depth=2, key=jr.PRNGKey(0))
    diverging = dict(steps=4, batch_size=20, key=jr.PRNGKey(1), progress=False,
                     optimizer=optax.sgd(float("inf")))
    # The loss of step 0 is finite; the update makes the weights NaN; the loss of
    # step 1 (computed before its update) is the first NaN.
    with pytest.raises(FloatingPointError, match=r"Training diverged: the loss is nan at "
                       r"step 1\. Lower the learning rate"):
        cd.train(model, (x, y), **diverging)
    with pytest.raises(FloatingPointError, match=r"the weights hold NaN or inf after "
                       r"step 1"):
        cd.train(model, (x, y), checkpoint_dir=tmp_path, checkpoint_every=1, **diverging)
    assert not list(tmp_path.glob("*.ckpt"))  # a diverged model is never checkpointed
    with pytest.raises(ValueError, match=r"`train_data\[0\]` contains 1 non-finite entry"):
        cd.train(model, (x.at[3, 1].set(jnp.nan), y), steps=1, batch_size=20,
                 key=jr.PRNGKey(1), progress=False)
    with pytest.raises(TypeError, match=r"`key` must be a JAX PRNG key"):
        cd.train(model, (x, y), steps=1, batch_size=20, key=0, progress=False)
