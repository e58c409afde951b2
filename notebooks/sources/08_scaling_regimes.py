# %% [markdown]
# # 08 · Scaling regimes: explosion, SDE or identity at initialisation
#
# **Claim** (Cohen, Cont, Rossier & Xu 2021, "Scaling properties of deep residual
# networks", ICML; Marion, Fermanian, Biau & Vert 2025, "Scaling ResNets in the
# large-depth regime", JMLR). For `h_{k+1} = h_k + L^{-β} A_k relu(h_k)` with i.i.d.
# weights:
#
# - `β < 1/2`: the output explodes as the depth `L` grows;
# - `β = 1/2`: `‖h_L − h_0‖/‖h_0‖` stays `O(1)` and random — the neural SDE regime;
# - `β > 1/2`: the network tends to the identity, `‖h_L − h_0‖/‖h_0‖ ~ L^{1/2 − β}`.
#
# With weights correlated across depth — each entry of `√d A_k`, as a sequence in `k`,
# fractional Gaussian noise of Hurst index `H` — `Var(Σ_k A_k) ∝ L^{2H}`, so the
# critical scale is `β = H`: `H = 1/2` is the i.i.d. case, `H → 1` (smooth weights)
# needs the ODE scaling `β = 1`. The same run is `contdepth scaling-regimes`.

# %%
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np

import contdepth as cd


depth_result = cd.experiments.run_depth_scaling(key=jr.PRNGKey(0))
heatmap = cd.experiments.run_hurst_heatmap(key=jr.PRNGKey(1))
print(f"depth scaling in {depth_result.seconds:.1f} s, heat map in "
      f"{heatmap.seconds:.1f} s")

# %% [markdown]
# ## The claims, checked
#
# Fitted exponents of the geometric mean (over keys) of the ratio against `L`, with
# their standard errors; the tolerance is four standard errors plus 0.03 (all depths
# of one key share their first layers, so the OLS standard error is optimistic).

# %%
for beta in depth_result.betas:
    fit = depth_result.fits[beta]
    print(f"beta = {beta:4}: exponent {fit.slope:+.3f} ± {fit.slope_stderr:.3f}, "
          f"theory {depth_result.expected_slope[beta]}")
for beta in (0.5, 0.75, 1.0):
    fit = depth_result.fits[beta]
    assert abs(fit.slope - (0.5 - beta)) <= 4 * fit.slope_stderr + 0.03, (beta, fit)
assert depth_result.fits[0.25].slope > 0.5  # explodes
# The i.i.d. sigma_max of dh_L/dh_0 at the deepest L: large below 1/2, near 1 above.
sigma = np.exp(np.log(depth_result.sigma_max[-1]).mean(axis=-1))
assert sigma[0] > 100 and abs(sigma[-1] - 1) < 0.1

# The critical line beta = H: the crossings increase with H and lie on the line
# within 0.03 for H >= 0.3; at L = 256 the rough, anti-persistent weights (H < 0.3)
# are furthest from their limit (within 0.1).
hursts = np.asarray(heatmap.hursts)
gap = np.abs(heatmap.critical_beta - hursts)
print("measured critical beta per H:", np.round(heatmap.critical_beta, 3))
assert np.all(np.diff(heatmap.critical_beta) > 0)
assert np.all(gap <= 0.1) and np.all(gap[hursts >= 0.3] <= 0.03), gap
print("scaling regimes ✓")

# %% [markdown]
# ## The picture
#
# Left and middle: i.i.d. weights, the ratio and the Jacobian's `σ_max` against `L`
# per `β` (mean ± standard error over keys, fitted power laws). Right: the heat map
# over `(H, β)` with the line `β = H` and the measured crossings.

# %%
fig = cd.experiments.plot_scaling_regimes(depth_result, heatmap)
plt.show()
