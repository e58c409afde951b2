# %% [markdown]
# # 06 · Local vs global flows, and the price of robustness
#
# **Claim 1.** The structure of `F` is the structure of the flow. A `ConvField`
# (3×3 conv → tanh → 3×3 conv) moves each pixel using only its 5×5 neighbourhood, so one
# step's Jacobian `I + h J_F` is *banded*: exactly zero between pixels more than 2
# apart, and after N steps more than 2N apart. An `AttentionField` mixes every token
# with every other: its Jacobian is *dense* from the first step.
#
# **Claim 2.** Per block, `‖y(x + δ) − y(x)‖ ≤ (1 + h K_F)‖δ‖`, so the network obeys
# `‖y_N(x + δ) − y_N(x)‖ ≤ Π (1 + h K_F)‖δ‖` for every `δ`, small or large, where
# `K_F = field.lipschitz_bound()` comes from the weights' spectral norms (`inf` for
# attention: dot-product self-attention is not globally Lipschitz).
#
# **Claim 3.** Capping `Lip(F) ≤ c` by spectral normalisation of the branch makes the
# bound `(1 + c/N)^N ≤ e^c` a *guarantee*, and trades expressivity for robustness: on
# two moons, small caps keep the flow near the identity (robust, but only as accurate
# as a linear classifier), large caps fit perfectly but amplify perturbations more.

# %%
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np

import contdepth as cd


jax.config.update("jax_enable_x64", True)  # float64 for the numerical checks

rng = np.random.default_rng(0)  # data from NumPy; JAX keys only for the weights

# %% [markdown]
# ## Jacobian sparsity: banded (conv) vs dense (attention)
#
# Images `(C, H, W) = (2, 10, 10)` and token sets `(L, D) = (16, 8)`; `cd.jacobian`
# flattens states in C order, so rows/columns run over channel, then row, then column.

# %%
C, H, W = 2, 10, 10
conv = cd.ConvField(C, width=4, kernel_size=3, key=jr.PRNGKey(0))
image = jnp.asarray(rng.standard_normal((C, H, W)))
attn = cd.AttentionField(8, num_heads=2, key=jr.PRNGKey(2))
tokens = jnp.asarray(rng.standard_normal((16, 8)))

n_steps = 3
J_conv1 = np.asarray(cd.jacobian(cd.EulerResNet(conv, 1, 1.0), image))
J_convN = np.asarray(cd.jacobian(cd.EulerResNet(conv, n_steps, 1.0), image))
J_attn = np.asarray(cd.jacobian(cd.EulerResNet(attn, 1, 1.0), tokens))

# Chebyshev distance between the pixels of every (row, column) pair of the Jacobian.
_, ii, jj = np.unravel_index(np.arange(C * H * W), (C, H, W))
dist = np.maximum(np.abs(ii[:, None] - ii[None, :]), np.abs(jj[:, None] - jj[None, :]))
eye = np.eye(C * H * W)
for J, radius in [(J_conv1, 2), (J_convN, 2 * n_steps)]:
    # Exactly zero outside the receptive field, and filled inside it.
    assert np.all((J - eye)[dist > radius] == 0.0)
    assert np.mean(np.abs(J - eye)[dist <= radius] > 0) > 0.95
# Attention: every token influences every token (all 16 x 16 blocks are non-zero).
blocks = np.abs(J_attn - np.eye(J_attn.shape[0])).reshape(16, 8, 16, 8).max(axis=(1, 3))
assert np.all(blocks > 0)
jacobians = {"conv, 1 step": J_conv1, f"conv, {n_steps} steps": J_convN,
             "attention, 1 step": J_attn}
density = {name: np.mean(np.abs(J - np.eye(J.shape[0])) > 0)
           for name, J in jacobians.items()}
print({k: f"{v:.1%} non-zero" for k, v in density.items()})

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 5), layout="constrained")
for ax, (name, J) in zip(axes, [("ConvField, 1 step", J_conv1),
                                (f"ConvField, {n_steps} steps", J_convN),
                                ("AttentionField, 1 step", J_attn)]):
    off = np.abs(J - np.eye(J.shape[0]))
    im = ax.imshow(np.log10(off + 1e-18), vmin=-8, vmax=0, cmap="magma")
    ax.set_title(f"{name}\nlog10 |J − I|, {np.mean(off > 0):.0%} non-zero")
    ax.set_xlabel("input index"), ax.set_ylabel("output index")
fig.colorbar(im, ax=axes, shrink=0.8, label="log10 |entry| (−8 = exactly 0)")
plt.show()

# %% [markdown]
# ## The Lipschitz bound `Π(1 + h K_F)` against measured output changes
#
# `EulerResNet(conv, N = 4, T = 1)`; 200 perturbations at each size
# `‖δ‖ ∈ {1e-3, 1e-1, 1, 10} · ‖x‖`: 199 random directions and the worst one (the top
# right singular vector of `dy_N/dy_0`).

# %%
N, T = 4, 1.0
net = cd.EulerResNet(conv, N, T)
K = float(conv.lipschitz_bound())
bound = (1 + T / N * K) ** N
J_net = np.asarray(cd.jacobian(net, image))
_, svals, vt = np.linalg.svd(J_net)
sigma_max = svals[0]

sizes = np.array([1e-3, 1e-1, 1.0, 10.0]) * float(jnp.linalg.norm(image))
dirs = rng.standard_normal((200, C, H, W))
dirs /= np.linalg.norm(dirs.reshape(200, -1), axis=1)[:, None, None, None]
dirs[0] = vt[0].reshape(C, H, W)  # the worst direction: the top right singular vector
dirs = jnp.asarray(dirs)
y_ref = net(image)


@jax.jit
def gains(size):
    def one(u):
        return jnp.linalg.norm(net(image + size * u) - y_ref) / size
    return jax.vmap(one)(dirs)


measured = np.stack([np.asarray(gains(s)) for s in sizes])
print(f"K_F = {K:.3f}, bound (1 + hK)^N = {bound:.3f}, sigma_max(J) = {sigma_max:.3f}, "
      f"largest measured gain = {measured.max():.3f}")
print("AttentionField.lipschitz_bound() =", float(attn.lipschitz_bound()))
assert np.all(measured <= bound) and sigma_max <= bound
# For small perturbations the gain is a Jacobian-vector norm: at most sigma_max,
# attained along the top singular vector.
assert np.all(measured[0] <= sigma_max * (1 + 1e-2))
assert np.isclose(measured[0, 0], sigma_max, rtol=1e-2)

# %%
fig, ax = plt.subplots(figsize=(7, 4.2))
for s, m in zip(sizes, measured):
    ax.loglog(np.full(m.shape, s), m, "o", ms=3, alpha=0.3, color="C0")
ax.loglog([], [], "o", color="C0", label="measured ‖y(x+δ) − y(x)‖ / ‖δ‖")
ax.loglog(sizes, measured[:, 0], "*", ms=10, color="C1",
          label="δ along the top singular vector")
ax.axhline(sigma_max, color="C1", label="σ_max(dy_N/dy_0) at x")
ax.axhline(bound, color="C3", ls="--", label=f"bound Π(1 + h K_F) = {bound:.2f}")
ax.set_xlabel("‖δ‖")
ax.set_ylabel("output change / input change")
ax.set_ylim(measured.min() / 2, 2 * bound)
ax.set_title(f"ConvField ResNet, N = {N}, T = {T:g}")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# The bound holds for every `δ` but is loose: `K_F` multiplies worst-case norms of the
# kernels (summed over offsets) and `tanh′ ≤ 1`. Small perturbations reach at most
# `σ_max` (along the top singular vector; random directions stay near 1), and large
# ones see gain → 1: the bounded tanh branch is negligible next to the identity.

# %% [markdown]
# ## Spectral-norm control of the branch: the robustness trade-off
#
# A `Linear(2, 2) → EulerResNet(MLPField(2, 32), N = 8, T = 1) → Linear(2, 2)`
# classifier on two moons. Spectral normalisation as a reparametrisation: before every
# use, the branch's output layer is scaled by `min(1, c / K_F)`, so `K_F ≤ c` always
# holds. One model per cap `c`, all trained at once with `jax.vmap` over `c` (full-batch
# Adam written out, 500 steps, one compilation).

# %%
moons = cd.datasets.two_moons(600, 0.1, key=jr.PRNGKey(5))
(x_train, y_train), (x_test, y_test) = moons
caps = jnp.array([0.01, 0.3, 1.0, 10.0])
k1, k2, k3 = jr.split(jr.PRNGKey(6), 3)
model = cd.Classifier(eqx.nn.Linear(2, 2, key=k1),
                      cd.EulerResNet(cd.MLPField(2, 32, 1, key=k2), 8, 1.0),
                      eqx.nn.Linear(2, 2, key=k3))
params, static = eqx.partition(model, eqx.is_inexact_array)


def capped(params, cap):
    m = eqx.combine(params, static)
    scale = jnp.minimum(1.0, cap / m.body.field.lipschitz_bound())
    where = lambda m: m.body.field.mlp.layers[-1].weight
    return eqx.tree_at(where, m, scale * where(m))


def loss(params, cap):
    logits = jax.vmap(capped(params, cap))(x_train)
    picked = jnp.take_along_axis(logits, y_train[:, None], axis=1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)


@jax.jit
@jax.vmap
def fit(cap, lr=2e-2, steps=500):
    def adam(carry, i):
        p, m, v = carry
        g = jax.grad(loss)(p, cap)
        m = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
        v = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g**2, v, g)
        c1, c2 = 1 - 0.9 ** (i + 1), 1 - 0.999 ** (i + 1)
        p = jax.tree.map(
            lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + 1e-8), p, m, v
        )
        return (p, m, v), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    (p, _, _), _ = jax.lax.scan(adam, (params, zeros, zeros), jnp.arange(steps))
    return p


@jax.jit
@jax.vmap
def assess(p, cap):
    m = capped(p, cap)
    accuracy = jnp.mean(jnp.argmax(jax.vmap(m)(x_test), axis=1) == y_test)
    states = jax.vmap(m.features)(x_test)
    gain = jax.vmap(lambda y: jnp.linalg.norm(cd.jacobian(m.body, y), ord=2))(states)
    return accuracy, jnp.max(gain), m.body.field.lipschitz_bound()


trained = fit(caps)
accuracy, worst_gain, lip = map(np.asarray, assess(trained, caps))
guarantee = (1 + caps / 8) ** 8
for c, a, g, b in zip(caps, accuracy, worst_gain, guarantee):
    print(f"cap c = {c:5.2f}: test accuracy {a:.3f}, worst σ_max over test points "
          f"{g:7.3f} ≤ guarantee {b:7.2f}")

# %%
assert np.all(lip <= np.asarray(caps) * (1 + 1e-9))  # the cap holds after training
assert np.all(worst_gain <= guarantee)  # ... and so does the robustness guarantee
# The trade-off: the tightest cap is less accurate, the loosest is less robust.
assert accuracy[0] < accuracy[-1] - 0.05
assert worst_gain[-1] > 10 * worst_gain[0]
print("local/global, Lipschitz and trade-off claims hold ✓")

# %%
fig, ax = plt.subplots(figsize=(7, 4.2))
cs = np.asarray(caps)
ax.loglog(cs, worst_gain, "-o", label="measured worst σ_max of dy_N/dy_0 (test points)")
ax.loglog(cs, guarantee, "--s", color="C3", label="guarantee (1 + c/N)^N")
ax.set_xlabel("cap c on Lip(F)")
ax.set_ylabel("amplification of the body")
ax2 = ax.twinx()
ax2.semilogx(cs, accuracy, "-^", color="C2", label="test accuracy (right axis)")
ax2.set_ylabel("test accuracy (two moons)", color="C2")
ax2.set_ylim(0.85, 1.01)
handles = [h for a in (ax, ax2) for h in a.get_legend_handles_labels()[0]]
ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper left")
ax.set_title("Capping Lip(F): robustness vs expressivity")
plt.show()
