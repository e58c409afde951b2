"""Property-based tests of the public API (issue 5).

Random shapes (sizes 0, 1, large), dtypes (bool, int, float16/32/64, complex), NaN and
inf entries and wrong argument types. Every case must either work correctly or raise
the documented error: a `ValueError`/`TypeError` raised by contdepth itself (never an
internal JAX/NumPy traceback) that names the argument in backticks, or for a
`NeuralODE` given a non-finite state, `equinox.EquinoxRuntimeError`. Outputs are never
NaN unless the input was. The number of cases run is reported at the end.
"""

import collections
import os
import traceback

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import given, HealthCheck, settings, strategies as st

import contdepth as cd


CASES: collections.Counter = collections.Counter()
PACKAGE_DIR = os.path.dirname(cd.__file__)
FUZZ = settings(
    deadline=None,
    max_examples=25,
    derandomize=True,  # the same cases on every run: CI is reproducible
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module", autouse=True)
def report(request):
    yield
    total = sum(CASES.values())
    line = f"test_fuzz: {total} cases run: " + ", ".join(
        f"{k} {v}" for k, v in sorted(CASES.items())
    )
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("\n" + line)
    print(line)


def _raised_by_contdepth(e: BaseException) -> bool:
    frames = traceback.extract_tb(e.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(PACKAGE_DIR)


def attempt(label: str, fn, args=None, names=()):
    """Run `fn`; return its value, or `None` after checking the error is documented.

    With `args` from `arguments(...)`: an all-valid draw must succeed, a draw with a
    surely invalid argument must fail, and an error must name (in backticks) one of
    the arguments that were not drawn valid. `names`: the arguments an error may name
    when the draw's validity is judged by the caller (array inputs)."""
    allowed = tuple(names) + (tuple(sorted(args.broken)) if args is not None else ())
    try:
        out = fn()
    except (ValueError, TypeError) as e:
        assert _raised_by_contdepth(e), f"{label}: undocumented {type(e).__name__}: {e}"
        assert args is None or args.broken, f"{label}: an all-valid draw failed: {e}"
        assert allowed, f"{label}: no argument may fail here: {e}"
        assert any(f"`{n}" in str(e) for n in allowed), (
            f"{label}: the message names none of {allowed}: {e}")
        CASES[f"{label}: error"] += 1
        return None
    assert args is None or not args.invalid, (
        f"{label}: accepted invalid {sorted(args.invalid)}: "
        + ", ".join(f"{n}={args[n]!r}" for n in sorted(args.invalid)))
    CASES[f"{label}: ok"] += 1
    return out


# --- strategies ---------------------------------------------------------------------

DTYPES = [jnp.bool_, jnp.int32, jnp.float16, jnp.float32, jnp.float64, jnp.complex64]
SPECIAL = [None, np.nan, np.inf, -np.inf]


@st.composite
def arrays(draw, shapes, valid_shape=None):
    # Half the draws are valid floating arrays, so the success path is fuzzed too.
    valid = valid_shape is not None and draw(st.booleans())
    shape = valid_shape if valid else draw(st.sampled_from(shapes))
    floats = [jnp.float16, jnp.float32, jnp.float64]
    dtype = draw(st.sampled_from(floats if valid else DTYPES))
    special = draw(st.sampled_from(SPECIAL)) if not valid or draw(st.booleans()) else None
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.uniform(-3, 3, size=shape)
    if special is not None and values.size and jnp.issubdtype(dtype, jnp.inexact):
        values.flat[rng.integers(values.size)] = special
    return jnp.asarray(values.astype(dtype))


# Wrong types and edge values for scalar arguments. Ints stay small: a huge width is a
# legitimate request for a huge allocation, not an input error.
WEIRD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 6),
    st.just(300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["3", "", "tanh"]),
    st.sampled_from([[1, 2], (3,), {"a": 1}, object()]),
    st.sampled_from([np.int64(3), np.float32(0.5), jnp.asarray(2), jnp.asarray([1.0, 2.0]),
                     1 + 2j, jnp.asarray(1.0 + 0j)]),
)
KEYS = st.sampled_from([jr.PRNGKey(0), jr.key(1)])
BAD_KEYS = st.one_of(WEIRD, st.just(jr.split(jr.PRNGKey(0))), st.just(jnp.zeros(2)))
# Values that no scalar argument accepts: every draw holding one must be refused.
INVALID = st.sampled_from(["3", "", [1, 2], object(), 1 + 2j, jnp.asarray([1.0, 2.0])])


class Args(dict):
    """Drawn keyword arguments; `broken`: names not drawn from their valid strategy,
    `invalid`: the subset drawn from `INVALID` (surely refused)."""

    broken: frozenset = frozenset()
    invalid: frozenset = frozenset()


@st.composite
def arguments(draw, bad=None, invalid=None, **valid):
    """Valid values for all arguments but at most two, which get a wrong type or an
    edge value instead (from `bad[name]`, default `WEIRD`: may happen to be valid) or
    a surely invalid value (from `invalid[name]`, default `INVALID`; `None` for an
    argument with no surely invalid value)."""
    bad = {"key": BAD_KEYS, **(bad or {})}
    invalid = invalid or {}
    broken = draw(st.lists(st.sampled_from(sorted(valid)), max_size=2, unique=True))
    out, sure = Args(), set()
    for name, s in valid.items():
        if name not in broken:
            out[name] = draw(s)
            continue
        surely = invalid.get(name, INVALID)
        if surely is not None and draw(st.booleans()):
            out[name] = draw(surely)
            sure.add(name)
        else:
            out[name] = draw(bad.get(name, WEIRD))
    out.broken, out.invalid = frozenset(broken), frozenset(sure)
    return out


SIZES = st.sampled_from([1, 3])


def _finite(x) -> bool:
    return bool(jnp.all(jnp.isfinite(x)))


# --- models on random states --------------------------------------------------------

STATE_SHAPES = [(), (0,), (1,), (3,), (4,), (1, 3), (3, 3), (3, 0), (1024,)]


@pytest.fixture(scope="module")
def models():
    key = jr.PRNGKey(0)
    field = cd.MLPField(3, 8, 1, key=key)
    return {
        "euler": cd.EulerResNet(field, 4, 1.0),
        "plain": cd.PlainNet(3, 3, key=key),
        "highway": cd.HighwayNet(3, 3, key=key),
        "scaled": cd.ScaledResidualNet(field, 3, alpha="nonexpansive", beta=0.5),
        "momentum": cd.MomentumResNet(field, 4, 1.0, gamma=0.5),
        "ode": cd.NeuralODE(field, 1.0, rtol=1e-4, atol=1e-6),
    }


@settings(FUZZ, max_examples=30)
@given(name=st.sampled_from(["euler", "plain", "highway", "scaled", "momentum", "ode"]),
       y=arrays(STATE_SHAPES, valid_shape=(3,)))
def test_models_on_random_states(models, name, y):
    model = models[name]
    try:
        out = attempt(f"{name}(y)", lambda: model(y), names=("y",))
    except eqx.EquinoxRuntimeError as e:
        assert name == "ode" and not _finite(y), e
        assert "initial state `y` contains NaN or inf" in str(e)
        CASES[f"{name}(y): error"] += 1
        return
    if out is None:
        assert y.shape != (3,) or not jnp.issubdtype(y.dtype, jnp.floating)
        return
    assert y.shape == (3,) and jnp.issubdtype(y.dtype, jnp.floating)
    assert out.shape == y.shape and out.dtype == y.dtype  # never silently cast
    if _finite(y):
        assert _finite(out), (name, y, out)  # no NaN out of a finite state
    assert name != "ode" or _finite(y)


@settings(FUZZ, max_examples=20)
@given(deltas=arrays([(), (4,), (4, 2), (4, 3, 1), (3, 3), (0, 3)], valid_shape=(4, 3)),
       y_dtype=st.sampled_from([jnp.float32, jnp.float64]))
def test_perturbed_on_random_deltas(models, deltas, y_dtype):
    model, y = models["euler"], jnp.linspace(-1.0, 1.0, 3).astype(y_dtype)
    out = attempt("perturbed", lambda: model.perturbed(y, deltas), names=("deltas",))
    valid = deltas.shape == (4, 3) and jnp.issubdtype(deltas.dtype, jnp.floating)
    assert (out is not None) == valid, (deltas.shape, deltas.dtype)
    if out is not None:
        assert out.dtype == jnp.result_type(y, deltas)  # promoted, never downcast
        if _finite(deltas):
            assert _finite(out)
        if not bool(jnp.any(deltas)):
            np.testing.assert_array_equal(out, model(y.astype(out.dtype)))


@st.composite
def times(draw):
    if draw(st.booleans()):  # valid: sorted times in [0, 1], any float dtype
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        dtype = draw(st.sampled_from([np.float16, np.float32, np.float64]))
        return np.sort(rng.uniform(0, 1, 3)).astype(dtype)
    return draw(st.one_of(arrays([(), (0,), (3,), (2, 2)]), WEIRD))


@settings(FUZZ, max_examples=20)
@given(ts=times())
def test_ode_trajectory_on_random_times(models, ts):
    model, y = models["ode"], jnp.linspace(-1.0, 1.0, 3)
    out = attempt("trajectory", lambda: model.trajectory(y, ts), names=("ts",))
    if out is not None:
        assert out.shape == (len(ts), 3) and out.dtype == y.dtype and _finite(out)


# --- constructors with random arguments ----------------------------------------------


def _check_field(field):
    y = jnp.linspace(-1.0, 1.0, field.dim)
    out = field(0.5, y)
    assert out.shape == y.shape and out.dtype == y.dtype and _finite(out)


@settings(FUZZ, max_examples=15)
@given(a=arguments(dim=SIZES, width=SIZES, depth=SIZES, time_dependent=st.booleans(),
                   key=KEYS))
def test_mlp_field_arguments(a):
    field = attempt("MLPField", lambda: cd.MLPField(
        a["dim"], a["width"], a["depth"], time_dependent=a["time_dependent"],
        key=a["key"]), a)
    if field is not None:
        _check_field(field)


@FUZZ
@given(matrix=arrays([(), (0, 0), (1, 1), (3, 3), (2, 3), (3,), (2, 2, 2), (64, 64)],
                     valid_shape=(3, 3)))
def test_linear_field_matrices(matrix):
    field = attempt("LinearField", lambda: cd.LinearField(matrix), names=("matrix",))
    if field is not None:
        assert jnp.issubdtype(matrix.dtype, jnp.floating) and _finite(matrix)
        _check_field(field)


@FUZZ
@given(a=arguments(num_steps=st.sampled_from([1, 2, 5, 1000]),
                   horizon=st.sampled_from([1e-3, 0.5, 1, 3.0])))
def test_euler_resnet_arguments(a):
    field = cd.LinearField(-jnp.eye(2))
    model = attempt("EulerResNet", lambda: cd.EulerResNet(
        field, a["num_steps"], a["horizon"]), a)
    if model is not None:
        y = jnp.ones(2)
        expected = (1 - model.step_size) ** model.num_steps  # (I + hA)^N y, A = -I
        np.testing.assert_allclose(model(y), expected * y, rtol=1e-10)


@FUZZ
@given(a=arguments(horizon=st.sampled_from([0.5, 1, 2.0]),
                   rtol=st.sampled_from([1e-8, 1e-3]), atol=st.sampled_from([1e-9, 1e-6]),
                   max_steps=st.sampled_from([1, 16, 4096]),
                   dt0=st.sampled_from([None, 0.1]), throw=st.booleans()))
def test_neural_ode_arguments(a):
    field = cd.LinearField(-jnp.eye(2))
    model = attempt("NeuralODE", lambda: cd.NeuralODE(field, **a), a)
    # Construction is all that is fuzzed here: solving hundreds of random
    # configurations is the job of test_reliability, not of a fast property test.
    if model is not None:
        assert model.horizon > 0 and model.rtol > 0 and model.atol > 0
        # `None` is diffrax's "unbounded" (valid with e.g. `diffrax.DirectAdjoint()`).
        assert model.max_steps is None or (
            isinstance(model.max_steps, int) and model.max_steps >= 1
        )


@settings(FUZZ, max_examples=15)
@given(kind=st.sampled_from(["plain", "highway"]),
       a=arguments(dim=SIZES, num_layers=SIZES, key=KEYS))
def test_baseline_arguments(kind, a):
    cls = cd.PlainNet if kind == "plain" else cd.HighwayNet
    model = attempt(kind, lambda: cls(a["dim"], a["num_layers"], key=a["key"]), a)
    if model is not None:
        y = jnp.linspace(-1.0, 1.0, model.dim)
        assert _finite(model(y))


@FUZZ
@given(a=arguments(model=st.sampled_from(cd.MODEL_NAMES), num_features=SIZES,
                   num_classes=SIZES, depth=SIZES, horizon=st.sampled_from([0.5, 2]),
                   key=KEYS))
def test_make_classifier_arguments(a):
    kwargs = {k: v for k, v in a.items() if k != "model"}
    clf = attempt("make_classifier", lambda: cd.make_classifier(
        a["model"], dim=3, width=3, **kwargs), a)
    if clf is not None:
        assert cd.count_parameters(clf) > 0


@FUZZ
@given(x=arrays([(), (0,), (1,), (2,), (3,), (1, 2), (2, 2)], valid_shape=(2,)))
def test_classifier_on_random_features(x):
    clf = cd.make_classifier("euler", num_features=2, num_classes=3, dim=3, width=3,
                             depth=2, key=jr.PRNGKey(0))
    logits = attempt("Classifier(x)", lambda: clf(x), names=("x",))
    if logits is not None:
        assert x.shape == (2,) and jnp.issubdtype(x.dtype, jnp.floating)
        assert logits.shape == (3,)
        assert _finite(logits) or not _finite(x)


# --- data, training, datasets, checkpoints -------------------------------------------


@pytest.fixture(scope="module")
def small_model():
    return cd.make_classifier("plain", num_features=2, num_classes=2, dim=2, width=2,
                              depth=1, key=jr.PRNGKey(0))


@settings(FUZZ, max_examples=30)
@given(x=arrays([(0, 2), (1, 2), (6, 2), (6, 3), (6,), (6, 2, 1)], valid_shape=(6, 2)),
       y=arrays([(0,), (1,), (6,), (6, 1)], valid_shape=(6,)),
       int_labels=st.sampled_from([True, True, True, False]))
def test_evaluate_on_random_data(small_model, x, y, int_labels):
    if int_labels:  # class indices in [0, 2)
        y = jnp.nan_to_num(jnp.abs(jnp.real(y))).astype(jnp.int32) % 2
    result = attempt("evaluate", lambda: cd.evaluate(small_model, (x, y)), names=("data",))
    valid = (x.shape == (6, 2) and y.shape == (6,) and int_labels
             and jnp.issubdtype(x.dtype, jnp.floating) and _finite(x))
    assert (result is not None) == valid, (x.shape, x.dtype, y.shape, y.dtype)
    if result is not None:
        assert x.shape[0] == y.shape[0] >= 1 and x.shape[1:] == (2,)
        assert jnp.issubdtype(x.dtype, jnp.floating) and _finite(x)
        assert 0 <= result["accuracy"] <= 1 and np.isfinite(result["loss"])


@settings(FUZZ, max_examples=4)
@given(a=arguments(steps=st.just(1), batch_size=st.sampled_from([1, 6]), key=KEYS,
                   clip_norm=st.sampled_from([None, 1.0]), progress=st.just(False),
                   invalid={"progress": None}))
def test_train_arguments(small_model, a):
    data = cd.datasets.two_moons(8, key=jr.PRNGKey(0))[0]
    out = attempt("train", lambda: cd.train(small_model, data, **a), a)
    if out is not None:
        model, history = out
        assert len(history["loss"]) == a["steps"]
        assert np.all(np.isfinite(history["loss"]))


@settings(FUZZ, max_examples=8)
@given(a=arguments(n=st.just(64), noise=st.sampled_from([0, 0.1]),
                   test_fraction=st.sampled_from([0.1, 0.5]),
                   key=st.just(jr.PRNGKey(0))),
       which=st.sampled_from(["two_moons", "spirals"]))
def test_dataset_arguments(a, which):
    out = attempt(which, lambda: getattr(cd.datasets, which)(**a), a)
    if out is not None:
        (x_tr, y_tr), (x_te, y_te) = out
        assert x_tr.shape[0] + x_te.shape[0] == a["n"] and x_tr.shape[1] == 2
        assert _finite(x_tr) and _finite(x_te)


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False,
              allow_infinity=False), st.text(max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=6,
)
# What JSON cannot hold or would silently change: NaN, tuples, int keys, arrays.
NOT_JSON = st.recursive(
    st.one_of(st.just(float("nan")), st.just(jnp.ones(2)), st.just({1, 2})),
    lambda inner: st.one_of(st.tuples(inner), st.dictionaries(st.integers(), inner,
                                                              min_size=1, max_size=2),
                            st.dictionaries(st.text(max_size=3), inner, min_size=1,
                                            max_size=2)),
    max_leaves=3,
)


@FUZZ
@given(a=arguments(metadata=st.dictionaries(st.text(max_size=3), JSON, max_size=3),
                   step=st.sampled_from([None, 0, 7]),
                   bad={"metadata": WEIRD},
                   invalid={"metadata": NOT_JSON}))
def test_checkpoint_metadata_and_step(tmp_path_factory, small_model, a):
    metadata, step = a["metadata"], a["step"]
    path = tmp_path_factory.mktemp("fuzz") / "m.ckpt"
    written = attempt("save", lambda: cd.save(path, small_model, step=step,
                                             metadata=metadata), a)
    if written is not None:
        ckpt = cd.load(written, like=small_model)
        assert ckpt.metadata == (metadata or {})
        assert ckpt.step == step and eqx.tree_equal(ckpt.model, small_model)
    else:
        assert not path.exists()


def test_enough_cases_ran():
    # Runs after the property tests above (pytest keeps file order).
    if len(CASES) < 10:
        pytest.skip("run with the whole file to count the cases")
    assert sum(CASES.values()) >= 250, CASES
    ok = sum(v for k, v in CASES.items() if k.endswith(": ok"))
    assert ok >= 80, CASES  # the properties were exercised on valid inputs too
