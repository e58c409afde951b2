"""contdepth: continuous-depth ResNets and Neural ODEs in JAX.

One vector field `F(t, y, args)`, two models: a forward-Euler ResNet and its Neural
ODE; Jacobians as the lens on depth.
"""

from importlib.metadata import version as _version

from . import (
    datasets as datasets,
    experiments as experiments,
    families as families,
    losses as losses,
)
from ._adjoint.reversible_heun import ReversibleAdjoint as ReversibleAdjoint
from ._checkpoint import (
    Checkpoint as Checkpoint,
    CheckpointError as CheckpointError,
    CheckpointMismatchError as CheckpointMismatchError,
    load as load,
    save as save,
)
from ._classifier import Classifier as Classifier
from ._cnf.flow import (
    cnf_inverse as cnf_inverse,
    cnf_log_prob as cnf_log_prob,
    cnf_sample as cnf_sample,
    CNFLogProb as CNFLogProb,
)
from ._control.penalties import (
    lipschitz_penalty as lipschitz_penalty,
    spectral_norm_penalty as spectral_norm_penalty,
)
from ._control.regularised_solve import (
    jacobian_frobenius_integral as jacobian_frobenius_integral,
    kinetic_energy as kinetic_energy,
    regularised_solve as regularised_solve,
    Regularisers as Regularisers,
)
from ._control.spectral_norm import (
    nonexpansive_residual_net as nonexpansive_residual_net,
    SpectralNormMLPField as SpectralNormMLPField,
)
from ._depth.memory_free import (
    memory_free_apply as memory_free_apply,
    MemoryFree as MemoryFree,
)
from ._depth.refine import refine_depth as refine_depth
from ._depth.regularity import (
    depth_regularity as depth_regularity,
    DepthRegularity as DepthRegularity,
    layer_parameters as layer_parameters,
    scaling_exponent as scaling_exponent,
    ScalingFit as ScalingFit,
)
from ._depth.untied import (
    as_neural_ode as as_neural_ode,
    DepthInterpolatedField as DepthInterpolatedField,
    ResidualBranch as ResidualBranch,
    untied_resnet as untied_resnet,
)
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
from ._jacobian.dense import jacobian as jacobian, singular_values as singular_values
from ._jacobian.extreme import (
    extreme_singular_values as extreme_singular_values,
    ExtremeSingularValues as ExtremeSingularValues,
)
from ._jacobian.frobenius import (
    FrobeniusEstimate as FrobeniusEstimate,
    jacobian_frobenius as jacobian_frobenius,
)
from ._jacobian.gradients import layer_gradient_norms as layer_gradient_norms
from ._jacobian.lanczos import (
    GolubKahanLanczos as GolubKahanLanczos,
    GolubKahanState as GolubKahanState,
)
from ._jacobian.logdet import log_det_jacobian as log_det_jacobian
from ._jacobian.lyapunov import (
    lyapunov_exponents as lyapunov_exponents,
    LyapunovQR as LyapunovQR,
    LyapunovQRState as LyapunovQRState,
)
from ._jacobian.operator import jacobian_operator as jacobian_operator
from ._jacobian.stability import (
    stability_function as stability_function,
    stability_region as stability_region,
    stability_report as stability_report,
    StabilityRegion as StabilityRegion,
    StabilityReport as StabilityReport,
)
from ._jacobian.step import step_jacobians as step_jacobians
from ._models.augmented import AugmentedNeuralODE as AugmentedNeuralODE
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


__version__ = _version("contdepth")
