# %% [markdown]
# # 04 · Stability of the explicit step
#
# **Claim.** One forward-Euler step on `dy/dt = λ y` multiplies by `R(hλ) = 1 + hλ`;
# a step is stable when `h·eig(J_F)` lies in the method's region `|R(z)| ≤ 1` (a disc
# for Euler, a larger region for RK4). For an antisymmetric field the true flow is
# orthogonal (unitary), but its eigenvalues are purely imaginary, outside Euler's disc:
#
# - at **fixed step** `h`, Euler amplifies by `(1 + h²ρ²)^{N/2} → ∞` as N grows;
# - at **fixed horizon** `T` (`h = T/N`), the excess amplification vanishes,
#   `≈ T²ρ²/(2N)`.
#
# The time-dependent Kohn–Sham / Schrödinger update `ψ ← ψ − i dt H ψ` is exactly this
# case: its norm grows as `Π (1 + dt² E_j²)^{1/2}` per eigen-component, whereas the
# Crank–Nicolson (Cayley) step keeps `‖ψ‖ = 1` to round-off and the leapfrog
# (`cd.ReversibleResNet`) keeps the drift bounded.

# %%
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
# ## Stability regions with `h·eig(J_F)` overlaid
#
# `cd.stability_report(field, y, h, method)` linearises the field at `y` and returns
# `z = h·eig(J_F)` with the amplification `|R(z)|` of one step.

# %%
dim = 8
field = cd.MLPField(dim, 32, 1, key=jr.PRNGKey(0))
last = field.mlp.layers[-1]
field = eqx.tree_at(lambda f: f.mlp.layers[-1].weight, field, 5 * last.weight)
y = jnp.asarray(rng.standard_normal(dim))
# T = 2 split into N = 1, 4, 16 steps.
reports = {h: cd.stability_report(field, y, h, "euler") for h in (2.0, 0.5, 0.125)}

# The report's eigenvalues are those of one Euler step's Jacobian, shifted by 1.
step = cd.step_jacobians(cd.EulerResNet(field, 1, 0.5), y)[0]
eig_step = np.linalg.eigvals(np.asarray(step))
z = np.asarray(reports[0.5].eigenvalues)
assert np.max(np.min(np.abs(eig_step[:, None] - (1 + z)[None, :]), axis=1)) < 1e-10
assert np.allclose(reports[0.5].amplification, np.abs(1 + z), rtol=1e-12)
print(reports[2.0])

# %% [markdown]
# ## An antisymmetric field: unitary flow, unstable Euler
#
# `A = S − Sᵀ` (eigenvalues `±iω`, spectral radius `ρ = 2`), `F(y) = A y`.

# %%
S = jnp.asarray(rng.standard_normal((dim, dim)))
A = S - S.T
A = 2.0 * A / jnp.max(jnp.abs(jnp.linalg.eigvals(A)))
rho = 2.0
anti = cd.LinearField(A)
x0 = jnp.asarray(rng.standard_normal(dim))

# Every eigenvalue of h*A is outside Euler's disc and inside RK4's region
# (h*rho < 2*sqrt(2)).
h = 0.1
assert int(cd.stability_report(anti, x0, h, "euler").num_unstable) == dim
assert int(cd.stability_report(anti, x0, h, "rk4").num_unstable) == 0
assert np.allclose(cd.stability_report(anti, x0, h, "euler").amplification,
                   np.sqrt(1 + h**2 * np.abs(np.linalg.eigvals(np.asarray(A))) ** 2))

# Fixed step h = 0.1: sigma_max of dy_N/dy_0 for every N <= 400, from one Jacobian of
# the whole trajectory.
n_max = 400
fixed_h = cd.EulerResNet(anti, num_steps=n_max, horizon=n_max * h)
jac_traj = cd.jacobian(lambda y_, args=None: fixed_h.trajectory(y_), x0)
smax_fixed_h = np.linalg.svd(np.asarray(jac_traj).reshape(n_max + 1, dim, dim),
                             compute_uv=False)[1:, 0]
ns_h = np.arange(1, n_max + 1)
assert np.allclose(smax_fixed_h, (1 + h**2 * rho**2) ** (ns_h / 2), rtol=1e-10)

# RK4 at the same h: |R(z)| <= 1 on every eigenvalue, so no growth.
rk4_amp = float(jnp.max(cd.stability_report(anti, x0, h, "rk4").amplification))
assert rk4_amp <= 1.0

# Fixed horizon T = 4: the excess amplification sigma_max - 1 vanishes like
# T^2 rho^2 / (2N).
T = 4.0
ns_T = np.array([16, 64, 256, 1024, 4096])
smax_fixed_T = np.array([cd.singular_values(cd.EulerResNet(anti, int(n), T), x0)[0]
                         for n in ns_T])
excess = smax_fixed_T - 1
predicted_T = (1 + (T / ns_T) ** 2 * rho**2) ** (ns_T / 2)
assert np.allclose(smax_fixed_T, predicted_T, rtol=1e-10)
slope = np.polyfit(np.log(ns_T[1:]), np.log(excess[1:]), 1)[0]
assert np.all(np.diff(excess) < 0) and -1.1 < slope < -0.9
assert np.isclose(excess[-1] * ns_T[-1], T**2 * rho**2 / 2, rtol=0.05)
# The true flow (a tight Neural ODE) is orthogonal: all singular values 1.
ode_sv = cd.singular_values(cd.NeuralODE(anti, T, rtol=1e-10, atol=1e-12), x0)
assert np.allclose(ode_sv, 1.0, atol=1e-7)
print(f"fixed h = {h}: σ_max at N = {n_max}: {smax_fixed_h[-1]:.3g}; "
      f"fixed T = {T}: σ_max − 1 = {excess.round(5)} (slope {slope:.3f})")

# %% [markdown]
# ## What the report recommends
#
# Each eigenvalue is **stable** (`|R(z)| ≤ 1`), **growth as the flow** (`Re z > 0`:
# the exact flow grows too, and the step grows no faster) or a **discretisation
# instability** (the step amplifies where the flow does not) — only the last is
# flagged. The report also gives every method's largest stable step and a suggestion.

# %%
anti_report = cd.stability_report(anti, x0, h, "euler")
print(anti_report.summary(horizon=T))
assert float(anti_report.max_stable_step) == 0.0  # Euler: no step is stable
assert anti_report.suggested_method() == "rk4"
assert np.isclose(float(anti_report.max_stable_steps["rk4"]), 2 * np.sqrt(2) / rho)
# The random MLP field at h = 0.5: four eigenvalues have |R(z)| > 1 but Re z > 0 --
# the exact flow grows faster still -- so nothing is flagged; at h = 2 one is.
mlp_report = reports[0.5]
assert int(mlp_report.num_unstable) == 0 and int(mlp_report.num_growth) == 4
assert int(jnp.sum(mlp_report.amplification > 1)) == 4
assert int(reports[2.0].num_unstable) == 1
print(mlp_report)
fig, axes = plt.subplots(1, 2, figsize=(11, 5))
anti_report.plot(ax=axes[0])
reports[2.0].plot(ax=axes[1])
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Schrödinger: `ψ' = −iHψ` with Euler, Crank–Nicolson and leapfrog
#
# `H` is a 1-D tight-binding Hamiltonian (hopping −1) with a harmonic potential on 16
# sites, `ħ = 1`. Writing `ψ = u + iv` gives the real system `u' = Hv`, `v' = −Hu`,
# an antisymmetric `LinearField([[0, H], [−H, 0]])` — so forward Euler is an
# `EulerResNet` of it, the leapfrog is `cd.ReversibleResNet(LinearField(H),
# LinearField(−H), …)`, and Crank–Nicolson `(I + i dt H/2) ψ_{k+1} = (I − i dt H/2) ψ_k`
# is written out with one linear solve per step.

# %%
n_sites, dt, n_steps = 16, 0.05, 400
sites = np.arange(n_sites) - (n_sites - 1) / 2
H = (np.diag(0.02 * sites**2) - np.eye(n_sites, k=1) - np.eye(n_sites, k=-1))
H = jnp.asarray(H)
psi0 = jnp.exp(-0.5 * (sites + 3) ** 2 + 1.0j * sites)  # a moving wave packet
psi0 = psi0 / jnp.linalg.norm(psi0)
y0 = jnp.concatenate([psi0.real, psi0.imag])
zero = jnp.zeros_like(H)
schrodinger = cd.LinearField(jnp.block([[zero, H], [-H, zero]]))


def norms_of(ys):
    return np.linalg.norm(np.asarray(ys), axis=-1)


euler_norm = norms_of(cd.EulerResNet(schrodinger, n_steps, n_steps * dt).trajectory(y0))

def scan_steps(step, y):  # n_steps applications of `step`, every state kept
    return jax.lax.scan(lambda s, _: (step(s), step(s)), y, None, length=n_steps)[1]


leap = cd.ReversibleResNet(cd.LinearField(H), cd.LinearField(-H), 1, dt, memory="store")
leap_ys = scan_steps(leap, y0)
leap_norm = np.concatenate([[1.0], norms_of(leap_ys)])

eye = jnp.eye(n_sites)
cayley = jnp.linalg.solve(eye + 0.5j * dt * H, eye - 0.5j * dt * H)
cn_psis = scan_steps(lambda p: cayley @ p, psi0)
cn_norm = np.concatenate([[1.0], norms_of(cn_psis)])

# Euler: ||psi_k||^2 = sum_j |c_j|^2 (1 + dt^2 E_j^2)^k exactly (c_j: eigen-components).
energies, vecs = np.linalg.eigh(np.asarray(H))
weights = np.abs(vecs.T @ np.asarray(psi0)) ** 2
k = np.arange(n_steps + 1)
predicted = np.sqrt(((1 + dt**2 * energies[None, :] ** 2) ** k[:, None]) @ weights)
assert np.allclose(euler_norm, predicted, rtol=1e-10)
assert euler_norm[-1] > 1.5  # blow-up of a norm that should stay 1
assert np.max(np.abs(cn_norm - 1)) < 1e-12  # Crank-Nicolson is unitary
assert np.max(np.abs(leap_norm - 1)) < 0.1  # leapfrog: bounded oscillation ...
quarter = n_steps // 4
assert abs(leap_norm[-quarter:].mean() - leap_norm[:quarter].mean()) < 0.01  # no drift
print(f"‖ψ‖ after t = {n_steps * dt:g}: Euler {euler_norm[-1]:.4f}, "
      f"leapfrog {leap_norm[-1]:.4f}, Crank–Nicolson {cn_norm[-1]:.15f}")

# %%
fig, axes = plt.subplots(2, 2, figsize=(12, 9))
ax = axes[0, 0]
extent = (-4.0, 4.5, -3.5, 3.5)
cd.stability_region("rk4", extent=extent).plot(ax=ax, colors=["C1"])
cd.stability_region("euler", extent=extent).plot(ax=ax, colors=["C0"])
for (hh, rep), marker in zip(reports.items(), ["x", "+", "1"]):
    zz = np.asarray(rep.eigenvalues)
    ax.plot(zz.real, zz.imag, marker, ms=8, label=f"MLP field, h = {hh:g}")
za = np.linalg.eigvals(np.asarray(h * A))
ax.plot(za.real, za.imag, "k.", label=f"antisymmetric A, h = {h:g}")
ax.plot([], [], "s", color="C0", alpha=0.3, label="Euler |1 + z| ≤ 1")
ax.plot([], [], "s", color="C1", alpha=0.3, label="RK4 |R(z)| ≤ 1")
ax.set_title("Stability regions with z = h·eig(J_F)")
ax.legend(fontsize=7, loc="lower right")

ax = axes[0, 1]
ax.semilogy(ns_h, smax_fixed_h, label="forward Euler")
ax.semilogy(ns_h, np.full(n_max, rk4_amp) ** ns_h, label="RK4 bound max|R(z)|^N")
ax.axhline(1.0, color="0.4", ls=":", label="exact flow: σ = 1")
ax.set_xlabel("depth N (horizon T = N h grows)")
ax.set_ylabel("σ_max of dy_N/dy_0")
ax.set_title(f"Antisymmetric field, fixed step h = {h:g}: blow-up")
ax.legend(fontsize=8)

ax = axes[1, 0]
ax.loglog(ns_T, excess, "-o", base=2, label="forward Euler: σ_max − 1")
ax.loglog(ns_T, T**2 * rho**2 / (2 * ns_T), "k:", base=2, label="T²ρ²/(2N)")
ax.set_xlabel("depth N (h = T/N)")
ax.set_ylabel("excess amplification σ_max − 1")
ax.set_title(f"Same field, fixed horizon T = {T:g}: amplification vanishes")
ax.legend(fontsize=8)

ax = axes[1, 1]
t_axis = k * dt
ax.semilogy(t_axis, np.abs(euler_norm - 1) + 1e-17, label="forward Euler  ψ − i dt Hψ")
ax.semilogy(t_axis, np.abs(leap_norm - 1) + 1e-17, label="leapfrog (ReversibleResNet)")
ax.semilogy(t_axis, np.abs(cn_norm - 1) + 1e-17, label="Crank–Nicolson (unitary)")
ax.set_xlabel("time t")
ax.set_ylabel("| ‖ψ(t)‖ − 1 |")
ax.set_title(f"Schrödinger ψ' = −iHψ, dt = {dt:g}: norm drift")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
