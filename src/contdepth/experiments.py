"""Published experiments on depth, reproduced: each a function returning a result with
every measured number, a plot, and a `contdepth` CLI subcommand writing JSON + PNG.

- [`run_smooth_stays_smooth`][contdepth.experiments.run_smooth_stays_smooth]: Marion,
  Wu, Sander & Biau 2024 (ICLR), weights of a trained ResNet stay smooth in depth when
  initialised smooth (`contdepth smooth-stays-smooth`).
- [`run_depth_scaling`][contdepth.experiments.run_depth_scaling] and
  [`run_hurst_heatmap`][contdepth.experiments.run_hurst_heatmap]: Cohen et al. 2021
  (ICML) and Marion, Fermanian, Biau & Vert 2025 (JMLR), explosion / SDE / identity
  regimes of `h + L^-beta A_k relu(h)` at initialisation (`contdepth scaling-regimes`).
- [`run_resnet_or_ode`][contdepth.experiments.run_resnet_or_ode]: Sander, Ablin &
  Peyré 2022 (NeurIPS), is a trained untied ResNet the Euler scheme of an ODE? Depth
  refinement, the Neural ODE of the interpolated weights and the memory-free backward
  (`contdepth resnet-or-ode`).
- [`run_circles`][contdepth.experiments.run_circles]: Dupont, Doucet & Teh 2019
  (NeurIPS), plain against augmented Neural ODEs on concentric circles (`contdepth
  circles`).
- [`run_robustness`][contdepth.experiments.run_robustness]: Jacobian regularisation
  (Finlay et al. 2020) and spectral normalisation (Miyato et al. 2018) against plain
  training: `sigma_max` of `dy/dx`, worst-case output change and accuracy (`contdepth
  robustness`).
- [`compare_cnf_regularisation`][contdepth.experiments.compare_cnf_regularisation]:
  a continuous normalising flow on a 2-D density trained with and without RNODE's
  regularisation (Finlay et al. 2020): test log-likelihood, function evaluations,
  exact against Hutchinson traces (`contdepth fit-cnf`).
- Fractional Brownian motion and its increments, exact by Cholesky, for weights of a
  given regularity across depth.
"""

from ._cnf.demo import (
    CNFComparison as CNFComparison,
    CNFRun as CNFRun,
    compare_cnf_regularisation as compare_cnf_regularisation,
    plot_cnf as plot_cnf,
)
from ._cnf.densities import (
    checkerboard as checkerboard,
    eight_gaussians as eight_gaussians,
    sample_density as sample_density,
)
from ._experiments.circles import (
    CirclesResult as CirclesResult,
    concentric_circles as concentric_circles,
    nfe_per_solve as nfe_per_solve,
    plot_circles as plot_circles,
    run_circles as run_circles,
)
from ._experiments.resnet_or_ode import (
    plot_resnet_or_ode as plot_resnet_or_ode,
    ResNetOrODEResult as ResNetOrODEResult,
    run_resnet_or_ode as run_resnet_or_ode,
)
from ._experiments.robustness import (
    make_robustness_classifier as make_robustness_classifier,
    plot_robustness as plot_robustness,
    RobustnessResult as RobustnessResult,
    run_robustness as run_robustness,
    worst_case_change as worst_case_change,
)
from ._experiments.scaling_regimes import (
    DepthScalingResult as DepthScalingResult,
    fbm_covariance as fbm_covariance,
    fractional_brownian_motion as fractional_brownian_motion,
    fractional_gaussian_noise as fractional_gaussian_noise,
    HurstHeatmapResult as HurstHeatmapResult,
    plot_scaling_regimes as plot_scaling_regimes,
    run_depth_scaling as run_depth_scaling,
    run_hurst_heatmap as run_hurst_heatmap,
)
from ._experiments.smooth_stays_smooth import (
    plot_smooth_stays_smooth as plot_smooth_stays_smooth,
    run_smooth_stays_smooth as run_smooth_stays_smooth,
    SmoothStaysSmoothResult as SmoothStaysSmoothResult,
)
