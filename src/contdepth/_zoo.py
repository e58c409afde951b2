"""Ready-made classifiers by name, shared by the command line, benchmarks and
notebooks."""

import equinox as eqx
import jax
import jax.random as jr
from jaxtyping import PRNGKeyArray

from ._classifier import Classifier
from ._fields.mlp import MLPField
from ._models.euler import EulerResNet
from ._models.highway import HighwayNet
from ._models.momentum import MomentumResNet
from ._models.neural_ode import NeuralODE
from ._models.plain import PlainNet
from ._models.scaled import ScaledResidualNet
from ._validation import check_key, check_positive_float, check_positive_int


MODEL_NAMES = ("euler", "ode", "plain", "highway", "scaled", "momentum")


def make_classifier(
    model: str,
    *,
    num_features: int,
    num_classes: int,
    dim: int = 64,
    width: int = 64,
    depth: int = 8,
    horizon: float = 1.0,
    rtol: float = 1e-3,
    atol: float = 1e-5,
    key: PRNGKeyArray,
) -> Classifier:
    """A `Linear -> body -> Linear` classifier whose body is chosen by name.

    **Arguments:**

    - `model`: one of `"euler"` (`EulerResNet` on an `MLPField`, `depth` steps over
        `horizon`), `"ode"` (`NeuralODE`, Tsit5 with `rtol`/`atol`), `"plain"`
        (tanh `PlainNet` of `depth` layers), `"highway"` (`HighwayNet`), `"scaled"`
        (`ScaledResidualNet`, untied MLP fields, non-expansive with `beta = 0.5`),
        `"momentum"` (`MomentumResNet`, `gamma = 0.9`, O(1)-memory reversible backprop).
    - `num_features`, `num_classes`: input size and number of classes.
    - `dim`: width of the state the body acts on.
    - `width`: hidden width of each MLP field (one hidden layer).
    - `depth`: number of steps/layers; `horizon`: the ODE horizon `T`.
    - `key`: a `jax.random.PRNGKey`.
    """
    if not isinstance(model, str):
        raise TypeError(f"`model` must be a str, one of {MODEL_NAMES}, got {model!r}.")
    if model not in MODEL_NAMES:
        raise ValueError(f"`model` must be one of {MODEL_NAMES}, got {model!r}.")
    num_features = check_positive_int("num_features", num_features)
    num_classes = check_positive_int("num_classes", num_classes)
    depth = check_positive_int("depth", depth)
    horizon = check_positive_float("horizon", horizon)
    dim = check_positive_int("dim", dim)
    width = check_positive_int("width", width)
    k_enc, k_body, k_out = jr.split(check_key("key", key), 3)

    def field(k):
        return MLPField(dim, width, 1, activation=jax.nn.tanh, key=k)

    if model == "euler":
        body = EulerResNet(field(k_body), depth, horizon)
    elif model == "ode":
        body = NeuralODE(field(k_body), horizon, rtol=rtol, atol=atol)
    elif model == "plain":
        body = PlainNet(dim, depth, activation=jax.nn.tanh, key=k_body)
    elif model == "highway":
        body = HighwayNet(dim, depth, key=k_body)
    elif model == "momentum":
        body = MomentumResNet(field(k_body), depth, horizon, gamma=0.9)
    else:
        fields = [field(k) for k in jr.split(k_body, depth)]
        body = ScaledResidualNet(fields, depth, alpha="nonexpansive", beta=0.5)
    return Classifier(
        eqx.nn.Linear(num_features, dim, key=k_enc),
        body,
        eqx.nn.Linear(dim, num_classes, key=k_out),
    )


def count_parameters(model) -> int:
    """Number of scalar parameters (inexact array entries) in a module."""
    return sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))
