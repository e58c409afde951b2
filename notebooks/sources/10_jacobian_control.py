# %% [markdown]
# # 10 · Jacobian control: robustness against accuracy
#
# **Claim.** Constraining the Lipschitz constant of a residual field — by a Jacobian
# regulariser during training (RNODE's `∫‖J_F‖_F² dt`, Finlay et al. 2020) or by
# spectral normalisation of its weights (Miyato et al. 2018) — shrinks the largest
# singular value of the input-to-output Jacobian `dy/dx` and the worst-case output
# change under input perturbations of a given norm, since each block obeys
# `‖y(x + d) − y(x)‖ ≤ (1 + h K_F)‖d‖`. What it costs in accuracy is measured, not
# assumed.
#
# Digits classifiers `Linear → EulerResNet(F, N = 8, T = 1) → Linear`, trained plainly,
# with the Jacobian regulariser at two strengths, and with a spectrally normalised
# field (`cd.SpectralNormMLPField`); the worst case is found by projected gradient
# ascent (a lower bound on the true worst case). The same run is
# `contdepth robustness`.

# %%
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np

import contdepth as cd


result = cd.experiments.run_robustness(key=jr.PRNGKey(0))
rows = result.variants
print("| model | test acc | σ_max mean / max | max output change per ε |")
print("|---|---|---|---|")
for name, r in rows.items():
    change = " / ".join(f"{c:.3g}" for c in r["change_max"])
    print(f"| {name} | {r['test_accuracy']:.4f} | {r['sigma_max_mean']:.3g} / "
          f"{r['sigma_max_max']:.3g} | {change} |")
print("ε =", result.epsilons)

# %% [markdown]
# ## The claims, checked

# %%
plain = rows["plain"]
for name, r in rows.items():
    if name == "plain":
        continue
    shrink = r["sigma_max_mean"] / plain["sigma_max_mean"]
    cost = plain["test_accuracy"] - r["test_accuracy"]
    print(f"{name}: σ_max × {shrink:.2f}, worst-case change × "
          f"{np.max(np.asarray(r['change_max']) / np.asarray(plain['change_max'])):.2f}"
          f" (at most), accuracy cost {100 * cost:+.1f} points")
    assert shrink < 0.85
    assert np.all(np.asarray(r["change_max"]) < np.asarray(plain["change_max"]))
print("controlled Jacobians are smaller, and so is the worst-case change ✓")

# %% [markdown]
# ## The trade-off
#
# Left: test accuracy against the mean `σ_max` of `dy/dx`. Right: the worst-case
# output change found against the perturbation norm ε.

# %%
fig = cd.experiments.plot_robustness(result)
plt.show()
