# %% [markdown]
# # 09 · Is a trained ResNet an ODE?
#
# **Claim** (Sander, Ablin & Peyré 2022, "Do Residual Neural Networks discretize Neural
# Ordinary Differential Equations?", NeurIPS). Train untied residual networks
# `x_{k+1} = x_k + V_k tanh(W_k x_k) / N` (as the body of a digits classifier) at depths
# N = 8 … 128:
#
# - from a smooth initialisation the trained network is the Euler scheme of an ODE:
#   its gap to the same network refined in depth (weights interpolated) and to the
#   Neural ODE of its interpolated weights falls as `O(1/N)`;
# - from an i.i.d. initialisation, at the same accuracy, it is not: the gaps stay flat
#   in N, and the weights stay rough (a discrete H¹ norm growing like N);
# - the memory-free backward pass (activations rebuilt by a reverse Euler step,
#   `cd.MemoryFree`) has a gradient error `O(1/N)`, and a corrected reconstruction
#   `O(1/N²)`.
#
# The same run is `contdepth resnet-or-ode`.

# %%
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np

import contdepth as cd


result = cd.experiments.run_resnet_or_ode(key=jr.PRNGKey(0))
print(f"{len(result.depths)} depths x {len(result.inits)} initialisations in "
      f"{result.seconds:.0f} s")

# %% [markdown]
# ## The claims, checked
#
# Log–log slopes against N (with their standard errors) of the geometric mean over
# seeds.

# %%
for name, fits in result.fits.items():
    print(f"{name:20s}", "  ".join(
        f"{init}: {fit.slope:+.2f} ± {fit.slope_stderr:.2f}" for init, fit in fits.items()
    ))
fits = result.fits
# Smooth start: an ODE discretisation.
assert fits["refine_gap"]["smooth"].slope <= -0.8
assert fits["ode_gap"]["smooth"].slope <= -0.8
# i.i.d. start: not one (the gaps do not fall), while the weights stay rough.
assert fits["refine_gap"]["iid"].slope > -0.3 and fits["ode_gap"]["iid"].slope > -0.3
assert fits["h1_norm"]["iid"].slope > 0.8 and fits["h1_norm"]["smooth"].slope < 0.2
# Memory-free backward: O(1/N), and O(1/N^2) corrected, for both.
for init in result.inits:
    assert fits["mf_error_euler"][init].slope <= -0.8
    assert fits["mf_error_corrected"][init].slope <= -1.6
# Both learn: test accuracy well above chance at every depth.
assert np.all(result.measures["accuracy"] > 0.9)
print("a trained ResNet is an ODE when its weights are smooth ✓")

# %% [markdown]
# ## The picture

# %%
fig = cd.experiments.plot_resnet_or_ode(result)
plt.show()
