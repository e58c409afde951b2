"""Acceptance 6 of the foundation: bad input gets a clear error, nothing silent."""

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import pytest

import contdepth as cd


@pytest.fixture
def field():
    return cd.MLPField(3, 8, 1, key=jr.PRNGKey(0))


@pytest.mark.parametrize(
    "num_steps, exc, match",
    [
        (0, ValueError, r"`num_steps` must be an int >= 1, got 0"),
        (-3, ValueError, r"`num_steps` must be an int >= 1, got -3"),
        (2.5, TypeError, r"`num_steps` must be a Python int >= 1, got 2.5 of type float"),
        (True, TypeError, r"`num_steps`"),
        ("8", TypeError, r"`num_steps` must be a Python int >= 1, got '8'"),
    ],
)
def test_bad_num_steps(field, num_steps, exc, match):
    with pytest.raises(exc, match=match):
        cd.EulerResNet(field, num_steps, 1.0)


@pytest.mark.parametrize("horizon", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_horizon(field, horizon):
    with pytest.raises(ValueError, match=r"`horizon` must be a finite real number > 0"):
        cd.EulerResNet(field, 4, horizon)
    with pytest.raises(ValueError, match=r"`horizon`"):
        cd.NeuralODE(field, horizon)


def test_bad_state_shape_and_dtype(field):
    model = cd.EulerResNet(field, 4, 1.0)
    with pytest.raises(ValueError, match=r"`y` has shape \(4,\).*MLPField\(dim=3\).*\(3\)"):
        model(jnp.ones(4))
    with pytest.raises(ValueError, match=r"no batch axis: use `jax.vmap`"):
        model(jnp.ones((5, 3)))
    with pytest.raises(TypeError, match=r"`y` must have a floating-point dtype.*int"):
        model(jnp.ones(3, dtype=jnp.int32))
    with pytest.raises(TypeError, match=r"`y` must be a JAX/NumPy floating-point array"):
        model([1.0, 2.0, 3.0])
    ode = cd.NeuralODE(field, 1.0)
    with pytest.raises(ValueError, match=r"`y` has shape"):
        ode(jnp.ones(2))
    conv = cd.EulerResNet(cd.ConvField(2, width=3, key=jr.PRNGKey(0)), 2, 1.0)
    with pytest.raises(ValueError, match=r"expects a single image of shape \(2, H, W\)"):
        conv(jnp.ones((3, 4, 4)))
    attn = cd.EulerResNet(cd.AttentionField(4, num_heads=2, key=jr.PRNGKey(0)), 2, 1.0)
    with pytest.raises(ValueError, match=r"expects a single token set of shape \(L, 4\)"):
        attn(jnp.ones((3, 5)))


def test_bad_fields():
    with pytest.raises(ValueError, match=r"`fields` must hold at least one vector field"):
        cd.PiecewiseField([], 1.0)
    with pytest.raises(TypeError, match=r"`fields` must be a list or tuple"):
        cd.PiecewiseField(cd.MLPField(2, 4, 1, key=jr.PRNGKey(0)), 1.0)
    with pytest.raises(TypeError, match=r"`fields\[1\]` must be a vector field"):
        cd.PiecewiseField([cd.MLPField(2, 4, 1, key=jr.PRNGKey(0)), "mlp"], 1.0)
    with pytest.raises(ValueError, match=r"`matrix` must be square"):
        cd.LinearField(jnp.ones((2, 3)))
    with pytest.raises(TypeError, match=r"`matrix` must have a floating-point dtype"):
        cd.LinearField(jnp.ones((2, 2), dtype=jnp.int32))
    with pytest.raises(ValueError, match=r"`kernel_size` must be odd"):
        cd.ConvField(2, width=3, kernel_size=2, key=jr.PRNGKey(0))
    with pytest.raises(ValueError, match=r"`dim` \(6\) must be divisible by `num_heads` \(4\)"):
        cd.AttentionField(6, num_heads=4, key=jr.PRNGKey(0))
    with pytest.raises(TypeError, match=r"`field` must be a vector field: any callable"):
        cd.EulerResNet("mlp", 4, 1.0)
    euler = cd.EulerResNet(lambda t, y, a: y, 4, 1.0)
    with pytest.raises(TypeError, match=r"got the depth model EulerResNet.*`model.field`"):
        cd.NeuralODE(euler, 1.0)
    with pytest.raises(ValueError, match=r"vector field lambda returned shape \(2,\)"):
        cd.EulerResNet(lambda t, y, a: y[:2], 4, 1.0)(jnp.ones(3))


def test_bad_baselines(field):
    with pytest.raises(ValueError, match=r"`num_layers` must be an int >= 1, got 0"):
        cd.PlainNet(3, 0, key=jr.PRNGKey(0))
    with pytest.raises(ValueError, match=r"holds 2 fields but `num_layers` is 3"):
        cd.ScaledResidualNet([field, field], 3, alpha=0.1)
    with pytest.raises(ValueError, match=r"`alpha` must be a finite real number >= 0"):
        cd.ScaledResidualNet(field, 3, alpha=-1.0)
    with pytest.raises(ValueError, match=r"needs \|1 - beta\| < 1"):
        cd.ScaledResidualNet(field, 3, alpha="nonexpansive", beta=0.0)
    with pytest.raises(ValueError, match=r"finite Lipschitz bound"):
        cd.ScaledResidualNet(
            cd.AttentionField(4, num_heads=2, key=jr.PRNGKey(0)), 2,
            alpha="nonexpansive", beta=0.5,
        )


def test_bad_solver_options(field):
    with pytest.raises(ValueError, match=r"pass `dt0=`"):
        cd.NeuralODE(field, 1.0, solver=diffrax.Euler())
    with pytest.raises(TypeError, match=r"`solver` must be a diffrax solver"):
        cd.NeuralODE(field, 1.0, solver="tsit5")
    with pytest.raises(ValueError, match=r"`rtol`"):
        cd.NeuralODE(field, 1.0, rtol=0.0)


def test_max_steps_surfaces_as_error(field):
    ode = cd.NeuralODE(field, 1.0, rtol=1e-12, atol=1e-12, max_steps=3)
    with pytest.raises(Exception, match=r"max_steps"):
        eqx.filter_jit(ode)(jnp.ones(3))


def test_bad_training_inputs():
    (x, y), _ = cd.datasets.two_moons(100, key=jr.PRNGKey(0))
    model = cd.make_classifier("euler", num_features=2, num_classes=2, dim=4, width=4,
                               depth=2, key=jr.PRNGKey(0))
    with pytest.raises(ValueError, match=r"`batch_size` \(500\) exceeds"):
        cd.train(model, (x, y), steps=1, batch_size=500, key=jr.PRNGKey(0), progress=False)
    with pytest.raises(TypeError, match=r"`train_data\[1\]` \(labels\) must be an integer"):
        cd.train(model, (x, y.astype(jnp.float32)), steps=1, batch_size=5,
                 key=jr.PRNGKey(0), progress=False)
    with pytest.raises(TypeError, match=r"`train_data` must be a `\(features, labels\)` pair"):
        cd.train(model, x, steps=1, batch_size=5, key=jr.PRNGKey(0), progress=False)
    with pytest.raises(ValueError, match=r"`steps` must be an int >= 1, got 0"):
        cd.train(model, (x, y), steps=0, batch_size=5, key=jr.PRNGKey(0), progress=False)
    with pytest.raises(ValueError, match=r"`model` must be one of"):
        cd.make_classifier("resnet", num_features=2, num_classes=2, key=jr.PRNGKey(0))


@pytest.mark.parametrize(
    "labels, match",
    [
        ([1, -1, 1, -1, 1, -1], r"`data\[1\]` \(labels\) must be class indices in \[0, 2\) "
         r"for a model with 2 logits, got -1 .*`\(labels \+ 1\) // 2`"),
        ([0, 1, 5, 0, 1, 0], r"in \[0, 2\) .*got 5 at index 2.*`num_classes=6`"),
    ],
)
def test_labels_outside_classes(labels, match):
    clf = cd.make_classifier("plain", num_features=2, num_classes=2, dim=2, width=2,
                             depth=1, key=jr.PRNGKey(0))
    data = (jnp.ones((6, 2)), jnp.asarray(labels))
    with pytest.raises(ValueError, match=match):
        cd.evaluate(clf, data)
    with pytest.raises(ValueError, match=match.replace("data", "train_data", 1)):
        cd.train(clf, data, steps=1, batch_size=2, key=jr.PRNGKey(0), progress=False)


def test_field_horizon_must_match_model():
    pieces = [cd.MLPField(2, 4, 1, key=k) for k in jr.split(jr.PRNGKey(0), 2)]
    field = cd.PiecewiseField(pieces, 1.0)
    with pytest.raises(ValueError, match=r"PiecewiseField\(horizon=1.0\) inside "
                       r"EulerResNet\(horizon=2.0\) would reuse its last piece on "
                       r"\[1.0, 2.0\]"):
        cd.EulerResNet(field, 4, 2.0)
    with pytest.raises(ValueError, match=r"inside NeuralODE\(horizon=0.5\) would never "
                       r"reach its part on \[0.5, 1.0\]"):
        cd.NeuralODE(field, 0.5)
    with pytest.raises(ValueError, match=r"inside MomentumResNet\(horizon=2.0\)"):
        one_piece = cd.PiecewiseField([cd.MLPField(4, 4, 1, key=jr.PRNGKey(1))], 1.0)
        cd.MomentumResNet(one_piece, 4, 2.0, gamma=0.5)
    with pytest.raises(ValueError, match=r"inside ReversibleResNet\(horizon=2.0\) .*: "
                       r"`field_b`"):
        cd.ReversibleResNet(pieces[0], field, 4, 2.0)
    cd.EulerResNet(field, 4, 1.0)  # matching horizons: fine
    cd.NeuralODE(field, 1.0)


def test_steps_straddling_pieces_warn_unless_filtered():
    import warnings

    pieces = [cd.MLPField(2, 4, 1, key=k) for k in jr.split(jr.PRNGKey(0), 4)]
    field = cd.PiecewiseField(pieces, 1.0)
    match = (r"6 steps over PiecewiseField with 4 pieces: num_steps is not a multiple "
             r"of 4, so steps straddle 2 of its 3 piece boundaries")
    with pytest.warns(cd.StepStraddlesJumpWarning, match=match):
        cd.EulerResNet(field, 6, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cd.EulerResNet(field, 8, 1.0)  # a multiple: no warning
        warnings.filterwarnings("ignore", category=cd.StepStraddlesJumpWarning)
        cd.EulerResNet(field, 6, 1.0)  # opted out
