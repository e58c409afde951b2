# %% [markdown]
# # 05 · Loss landscape and the ensemble-of-paths view
#
# **Claim 1 (landscape).** Fitting `y = αx` with two scalar weights, `ŷ = w₂w₁x`, has
# loss `(w₁w₂ − α)²` and a *saddle* at the origin (Hessian eigenvalues `±2α`). With a
# skip, `ŷ = x + w₂w₁x` and `α = 1`, the loss is `(w₁w₂)²` and the origin — the
# "do-nothing" initialisation — is a *global minimum*.
#
# **Claim 2 (ensembles).** Unrolling a residual stack, `x_L = Π_l (I + F_l) x_0` is a
# sum over `2^L` paths (choose the branch or the skip at each block); for linear
# blocks this is exact, and the number of paths of length `k` is binomial `C(L, k)`.
# Consequently deleting one block of a trained residual network changes its accuracy
# only a little, while deleting one layer of a trained plain network destroys it
# (Veit, Wilber & Belongie 2016).

# %%
import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np

import contdepth as cd


jax.config.update("jax_enable_x64", True)  # float64 for the numerical checks

rng = np.random.default_rng(0)  # JAX keys for the weights; NumPy for data

# %% [markdown]
# ## The two-weight toy


# %%
def loss_plain(w, alpha=1.0):
    return (w[0] * w[1] - alpha) ** 2


def loss_skip(w):  # y_hat = x + w2 w1 x fitting y = x
    return (w[0] * w[1]) ** 2


origin = jnp.zeros(2)
hess_plain = np.linalg.eigvalsh(jax.hessian(loss_plain)(origin))
hess_skip = np.linalg.eigvalsh(jax.hessian(loss_skip)(origin))
print("Hessian eigenvalues at 0: no skip", hess_plain, "; with skip", hess_skip)

# No skip: zero gradient, Hessian eigenvalues -2 and +2: a saddle.
assert np.allclose(jax.grad(loss_plain)(origin), 0)
assert np.allclose(hess_plain, [-2.0, 2.0])
# With skip: zero gradient, loss 0 and loss >= 0 everywhere: a global minimum.
grid = np.linspace(-2, 2, 201)
W1, W2 = np.meshgrid(grid, grid)
L_plain = (W1 * W2 - 1.0) ** 2
L_skip = (W1 * W2) ** 2
assert np.allclose(jax.grad(loss_skip)(origin), 0) and float(loss_skip(origin)) == 0.0
assert L_skip.min() >= 0.0 and L_plain.min() < float(loss_plain(origin))

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4.3), layout="constrained")
levels = np.linspace(0, 4, 21)
for ax, loss, title in [
    (axes[0], L_plain, "no skip: (w₁w₂ − 1)², saddle at 0"),
    (axes[1], L_skip, "with skip: (w₁w₂)², minimum at 0"),
]:
    cs = ax.contourf(W1, W2, np.minimum(loss, 4), levels=levels, cmap="viridis")
    ax.plot(0, 0, "r*", ms=12, label="origin (zero init)")
    ax.set_xlabel("w₁"), ax.set_ylabel("w₂")
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.legend(fontsize=8, loc="upper right")
fig.colorbar(cs, ax=axes, label="loss (clipped at 4)")
plt.show()

# %% [markdown]
# ## `2^L` paths: exact for linear blocks
#
# A residual stack of `L = 10` untied linear blocks, `x ← x + W_l x`, is
# `EulerResNet(PiecewiseField([LinearField(W_l)], T = L), N = L, T = L)` (`h = 1`).
# Enumerate all `2^10` subsets of blocks, multiply the chosen `W_l` in order, and sum.

# %%
L, d = 10, 6
Ws = [jnp.asarray(0.3 * rng.standard_normal((d, d)) / np.sqrt(d)) for _ in range(L)]
x0 = jnp.asarray(rng.standard_normal(d))
linear_resnet = cd.EulerResNet(
    cd.PiecewiseField([cd.LinearField(W) for W in Ws], float(L)), L, float(L)
)

Ws_np, x_np = [np.asarray(W) for W in Ws], np.asarray(x0)
paths_by_length = {k: [] for k in range(L + 1)}
for mask in itertools.product([0, 1], repeat=L):
    v = x_np
    for use, W in zip(mask, Ws_np):
        if use:
            v = W @ v
    paths_by_length[sum(mask)].append(v)

total = sum(np.sum(vs, axis=0) for vs in paths_by_length.values())
assert np.allclose(total, linear_resnet(x0), atol=1e-12)  # the network IS the path sum
counts = np.array([len(paths_by_length[k]) for k in range(L + 1)])
assert np.array_equal(counts, [math.comb(L, k) for k in range(L + 1)])
contrib = np.array([np.linalg.norm(np.sum(paths_by_length[k], axis=0))
                    for k in range(L + 1)])
print("paths per length:", counts)
print("‖sum of paths of length k‖:", contrib.round(4))

# %% [markdown]
# ## Lesion study: delete one block
#
# An untied residual net (`EulerResNet` over a `PiecewiseField` of 8 MLP branches,
# `h = 1`) and a plain tanh net (`PlainNet`, 8 layers), same encoder/readout shapes,
# trained identically on digits. Deleting residual block `k` = zeroing its branch
# (the block becomes the identity); deleting plain layer `k` = removing it (the layer
# becomes the identity too).

# %%
train_data, test_data = cd.datasets.digits()
depth, dim = 8, 32
keys = jr.split(jr.PRNGKey(2), depth + 3)


def classifier(body):
    return cd.Classifier(eqx.nn.Linear(64, dim, key=keys[-2]), body,
                         eqx.nn.Linear(dim, 10, key=keys[-1]))


branches = [cd.MLPField(dim, dim, 1, key=k) for k in keys[:depth]]
bodies = {
    "residual": cd.EulerResNet(
        cd.PiecewiseField(branches, float(depth)), depth, float(depth)
    ),
    "plain": cd.PlainNet(dim, depth, key=keys[depth]),
}
nets = {
    name: cd.train(classifier(body), train_data, steps=150, batch_size=64,
                   key=jr.PRNGKey(3), progress=False)[0]
    for name, body in bodies.items()
}


def delete_block(net, k):
    if isinstance(net.body, cd.PlainNet):
        keep = np.array([i for i in range(depth) if i != k])
        return eqx.tree_at(lambda m: (m.body.weights, m.body.biases), net,
                           (net.body.weights[keep], net.body.biases[keep]))
    last = lambda m: m.body.field.pieces.mlp.layers[-1]
    return eqx.tree_at(lambda m: (last(m).weight, last(m).bias), net,
                       (last(net).weight.at[k].set(0.0), last(net).bias.at[k].set(0.0)))


base = {name: cd.evaluate(net, test_data)["accuracy"] for name, net in nets.items()}
lesioned = {
    name: np.array([cd.evaluate(delete_block(net, k), test_data)["accuracy"]
                    for k in range(depth)])
    for name, net in nets.items()
}
for name in nets:
    print(f"{name:8s}: intact {base[name]:.3f}; "
          f"one block deleted: {lesioned[name].round(3)}")

# %%
drop = {name: base[name] - lesioned[name] for name in nets}
# Residual: every single deletion costs < 5 points (mean < 2.5); plain: the mean
# deletion loses more than half of the accuracy above chance (10%).
assert np.max(drop["residual"]) < 0.05 and np.mean(drop["residual"]) < 0.025
assert np.mean(drop["plain"]) > 0.5 * (base["plain"] - 0.1)
print("landscape, path-sum and lesion claims hold ✓")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
ks = np.arange(L + 1)
axes[0].bar(ks, counts / counts.sum(), color="C0", alpha=0.6,
            label="paths of length k: C(L,k)/2^L")
axes[0].plot(ks, contrib / contrib.sum(), "-o", color="C3",
             label="share of ‖sum over those paths‖")
axes[0].set_xlabel("path length k (blocks passed through the branch)")
axes[0].set_title(f"Ensemble of 2^{L} paths, L = {L} linear blocks")
axes[0].legend(fontsize=8)
width = 0.4
for i, name in enumerate(nets):
    axes[1].bar(np.arange(depth) + (i - 0.5) * width, lesioned[name], width,
                label=f"{name} (intact {base[name]:.2f})", color=f"C{i}")
    axes[1].axhline(base[name], color=f"C{i}", ls=":")
axes[1].axhline(0.1, color="0.5", lw=0.8, label="chance")
axes[1].set_xlabel("deleted block k")
axes[1].set_ylabel("test accuracy")
axes[1].set_title("Lesion study on digits: delete one block")
axes[1].legend(fontsize=8, loc="center right")
fig.tight_layout()
plt.show()
