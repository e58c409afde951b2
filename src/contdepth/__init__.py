"""contdepth: continuous-depth ResNets and Neural ODEs in JAX.

One vector field `F(t, y, args)`, two models: a forward-Euler ResNet and its Neural
ODE; Jacobians as the lens on depth.
"""

import importlib.metadata

from . import datasets as datasets
from . import families as families
from . import losses as losses
from ._adjoint.reversible_heun import ReversibleAdjoint as ReversibleAdjoint
from ._checkpoint import Checkpoint as Checkpoint, load as load, save as save
from ._classifier import Classifier as Classifier
from ._distributed.mesh import make_mesh as make_mesh, shard_batch as shard_batch
from ._fastpath.batched import batched_apply as batched_apply
from ._fields.attention import AttentionField as AttentionField
from ._fields.base import AbstractVectorField as AbstractVectorField
from ._fields.conv import ConvField as ConvField
from ._fields.linear import LinearField as LinearField
from ._fields.mlp import MLPField as MLPField
from ._fields.piecewise import PiecewiseField as PiecewiseField
from ._fields.protocol import (
    lipschitz_bound as lipschitz_bound,
    StepStraddlesJumpWarning as StepStraddlesJumpWarning,
)
from ._models.base import (
    AbstractDepthModel as AbstractDepthModel,
    AbstractDiscreteDepthModel as AbstractDiscreteDepthModel,
)
from ._models.checked import Checked as Checked, checked as checked
from ._models.euler import EulerResNet as EulerResNet
from ._models.highway import HighwayNet as HighwayNet
from ._models.momentum import MomentumResNet as MomentumResNet
from ._models.neural_ode import NeuralODE as NeuralODE
from ._models.plain import PlainNet as PlainNet
from ._models.reversible import ReversibleResNet as ReversibleResNet
from ._models.scaled import ScaledResidualNet as ScaledResidualNet
from ._jacobian.dense import jacobian as jacobian, singular_values as singular_values
from ._jacobian.extreme import (
    extreme_singular_values as extreme_singular_values,
    ExtremeSingularValues as ExtremeSingularValues,
)
from ._jacobian.lanczos import (
    GolubKahanLanczos as GolubKahanLanczos,
    GolubKahanState as GolubKahanState,
)
from ._jacobian.operator import jacobian_operator as jacobian_operator
from ._jacobian.step import step_jacobians as step_jacobians
from ._jacobian.frobenius import (
    FrobeniusEstimate as FrobeniusEstimate,
    jacobian_frobenius as jacobian_frobenius,
)
from ._jacobian.gradients import layer_gradient_norms as layer_gradient_norms
from ._jacobian.logdet import log_det_jacobian as log_det_jacobian
from ._jacobian.lyapunov import (
    lyapunov_exponents as lyapunov_exponents,
    LyapunovQR as LyapunovQR,
    LyapunovQRState as LyapunovQRState,
)
from ._jacobian.stability import (
    stability_function as stability_function,
    stability_region as stability_region,
    stability_report as stability_report,
    StabilityRegion as StabilityRegion,
    StabilityReport as StabilityReport,
)
from ._sweep.result import DepthSweep as DepthSweep
from ._sweep.sweep import depth_sweep as depth_sweep
from ._train.evaluate import evaluate as evaluate
from ._train.step import make_train_step as make_train_step, TrainStep as TrainStep
from ._train.train import train as train
from ._train.validation import EarlyStopping as EarlyStopping
from ._zoo import (
    count_parameters as count_parameters,
    make_classifier as make_classifier,
    MODEL_NAMES as MODEL_NAMES,
)


__version__ = importlib.metadata.version("contdepth")
