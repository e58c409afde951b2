# %% [markdown]
# # 02 · Depth as time
#
# **Claim.** A ResNet step `y_{k+1} = y_k + h F(t_k, y_k)` is forward Euler for
# `dy/dt = F(t, y)`. Train a field once, then run *the same learned field* as a ResNet
# at depth N = 4 … 1024 with the horizon `T = 1` fixed (`h = T/N`), and as a Neural ODE:
#
# - the output and the end-to-end Jacobian converge to the Neural ODE's at rate
#   `O(1/N)`, and the accuracy is kept as the network is refined in depth;
# - the spectrum of `dy_N/dy_0` stays inside Grönwall's bounds
#   `(1 − hL)^N ≤ σ ≤ (1 + hL)^N ≤ exp(LT)` for every N, whereas the unscaled ResNet
#   (`h = 1`, horizon growing with N) amplifies without bound and a plain tanh stack's
#   `σ_min` vanishes;
# - with depth-varying i.i.d. random branches, the `1/N` scaling (ODE limit) averages
#   out to the identity while `1/√N` (SDE limit) keeps a non-trivial, bounded spectrum.
#
# The figure at the end is saved to `docs/depth_as_time.png` (shown in the README).

# %%
import pathlib

import equinox as eqx
import jax
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

import contdepth as cd


jax.config.update("jax_enable_x64", True)  # float64 for the numerical checks

# %% [markdown]
# ## Train `Linear → EulerResNet(F, N = 4, T = 1) → Linear` on digits

# %%
train_data, test_data = cd.datasets.digits()
model = cd.make_classifier(
    "euler", num_features=64, num_classes=10, dim=16, width=32, depth=4,
    key=jr.PRNGKey(0),
)
model, history = cd.train(
    model, train_data, steps=300, batch_size=128, key=jr.PRNGKey(1), progress=False
)
field = model.body.field
print(f"trained in {history['seconds']:.1f} s; test accuracy at N = 4: "
      f"{cd.evaluate(model, test_data)['accuracy']:.3f}")

# %% [markdown]
# ## Sweep the depth with `T` fixed
#
# `cd.depth_sweep` re-evaluates the learned field at every N on 4 encoded test images
# (worst case over them), against a tight-tolerance Neural ODE, plus the baselines.

# %%
steps = (4, 16, 64, 256, 1024)
states = jax.vmap(model.features)(test_data[0][:4])
sweep = cd.depth_sweep(
    field, states, horizon=1.0, steps=steps, batched=True, progress=False
)
display(Markdown(sweep.to_markdown()))

# %% [markdown]
# ## Refine depth after training: accuracy per N, and the Neural ODE


# %%
def with_body(body):
    return eqx.tree_at(lambda m: m.body, model, body)


accuracy = np.array([
    cd.evaluate(with_body(cd.EulerResNet(field, n, 1.0)), test_data)["accuracy"]
    for n in steps
])
ode_accuracy = cd.evaluate(with_body(cd.NeuralODE(field, 1.0)), test_data)["accuracy"]
for n, a in zip(steps, accuracy):
    print(f"N = {n:5d}: test accuracy {a:.4f}")
print(f"Neural ODE: test accuracy {ode_accuracy:.4f}")

# %% [markdown]
# ## The claims, checked

# %%
ns = np.asarray(steps, dtype=float)
euler = sweep.families["euler"]
L, T = sweep.lipschitz, sweep.horizon

# Euler -> ODE at rate O(1/N): fitted log-log slopes of the output and Jacobian errors.
slope_out = np.polyfit(np.log(ns), np.log(euler["out_rel_err"]), 1)[0]
slope_jac = np.polyfit(np.log(ns), np.log(euler["jac_rel_err"]), 1)[0]
print(f"slopes: output error {slope_out:.3f}, Jacobian error {slope_jac:.3f}")
assert -1.1 < slope_out < -0.9 and -1.1 < slope_jac < -0.9

# Bounded spectrum with T fixed: Grönwall's bounds at every N.
assert np.all(euler["sigma_max"] <= euler["upper_bound"] * (1 + 1e-9))
assert np.all(euler["upper_bound"] <= np.exp(L * T))
assert np.all(euler["sigma_min"] >= euler["lower_bound"] * (1 - 1e-9))

# Refined in depth, the trained network keeps its accuracy, and reaches the ODE's.
assert np.all(accuracy >= accuracy[0] - 0.02)
assert abs(accuracy[-1] - ode_accuracy) <= 0.005

# Unscaled (h = 1): the amplification max(σ_max, 1/σ_min) grows without bound.
unscaled = sweep.families["unscaled"]
amplification = np.maximum(unscaled["sigma_max"], 1 / unscaled["sigma_min"])
assert amplification[-1] > 100 * amplification[0]
# Plain tanh stack: σ_min vanishes.
assert sweep.families["plain"]["sigma_min"][-1] < 1e-30

# Random depth-varying branches: 1/N -> identity; 1/sqrt(N) -> a non-trivial, bounded
# limit.
def log_spread(family):
    cols = sweep.families[family]
    return np.maximum(np.log(cols["sigma_max"]), -np.log(cols["sigma_min"]))


assert log_spread("branch_1/N")[-1] < 0.05
sqrt_spread = log_spread("branch_1/sqrt(N)")
assert np.all(sqrt_spread[1:] > 0.2) and np.all(sqrt_spread < 2)
print("all depth-as-time claims hold ✓")

# %% [markdown]
# ## The picture
#
# Left: singular values of `dy_N/dy_0` against N (grey band: the Neural ODE's; dotted:
# `exp(LT)`). Middle: distance to the Neural ODE with the slope −1 guide. Right: test
# accuracy of the trained network refined in depth.

# %%
fig, axes = plt.subplots(
    1, 3, figsize=(16, 4.6), gridspec_kw={"width_ratios": [1.5, 1, 1]}
)
sweep.plot(ax=axes[:2])
axes[2].semilogx(ns, accuracy, "-o", ms=3, base=2, label="EulerResNet(F, N, T = 1)")
axes[2].axhline(ode_accuracy, color="0.4", ls=":", label="Neural ODE (adaptive)")
axes[2].axvline(4, color="0.7", lw=0.8)
axes[2].annotate("trained at N = 4", (4, accuracy[0]), xytext=(8, accuracy[0] - 0.01),
                 fontsize=8)
axes[2].set_ylim(accuracy.min() - 0.03, 1.0)
axes[2].set_xlabel("depth N")
axes[2].set_ylabel("test accuracy (digits)")
axes[2].set_title("Same learned field, refined in depth")
axes[2].legend(fontsize=8, loc="lower right")
fig.tight_layout()
docs = pathlib.Path("..", "docs")
docs.mkdir(exist_ok=True)
fig.savefig(docs / "depth_as_time.png", dpi=110)
plt.show()
