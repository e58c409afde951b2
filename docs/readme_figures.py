"""Every number printed in README.md, the documentation pages (docs/*.md) and
benchmarks/README.md, from code.

Each table or number sits between `<!-- figure:NAME -->` and `<!-- /figure:NAME -->`
markers; this script writes what goes between them, one function per figure:

    python docs/readme_figures.py                 # rewrite every block in place
    python docs/readme_figures.py --check         # exit 1 if any block differs
    python docs/readme_figures.py --only NAME ... # some figures
    python docs/readme_figures.py --fast          # only the recomputed ones (seconds each)
    python docs/readme_figures.py --regenerate    # first re-run the slow jobs (minutes)

Three kinds of figure:

- `fast`: recomputed on every run with fixed keys (float64), a few seconds each;
- `slow`: rendered from a stored result under `docs/results/` that `--regenerate` writes
  again by running the job (`contdepth sweep`, `contdepth train`, a checkpoint
  measurement);
- `measured`: rendered from the benchmark suite's stored measurements in
  `benchmarks/results/*.json` (re-run with `python -m benchmarks`, never from here) and
  tagged with the environment they were measured on.
"""

import argparse
import dataclasses
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable


ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BENCH_README = ROOT / "benchmarks" / "README.md"
# The documentation pages that print numbers (the site is built from docs/ by mkdocs).
DOCS = ROOT / "docs"
GETTING_STARTED = DOCS / "index.md"
TRAINING = DOCS / "training.md"
JACOBIANS = DOCS / "jacobians-and-spectra.md"
DEPTH_SWEEP = DOCS / "depth-sweep.md"
REPRODUCED = DOCS / "reproduced-results.md"
CONTROL = DOCS / "jacobian-control.md"
PERFORMANCE = DOCS / "benchmarks.md"
MEMORY = DOCS / "memory.md"
SCALING_OUT = DOCS / "scaling-out.md"
ERRORS = DOCS / "errors-and-guarantees.md"
CHECKPOINTS = DOCS / "checkpoints.md"
DEVELOPMENT = DOCS / "development.md"
RESULTS = ROOT / "docs" / "results"
BENCH = ROOT / "benchmarks" / "results"


@dataclasses.dataclass(frozen=True)
class Figure:
    name: str
    kind: str  # "fast" | "slow" | "measured"
    render: Callable[[], str]
    file: pathlib.Path
    inline: bool = False  # a span inside a sentence rather than a block
    regenerate: Callable[[], None] | None = None
    also: tuple[pathlib.Path, ...] = ()  # further files that print the same block

    @property
    def files(self) -> tuple[pathlib.Path, ...]:
        return (self.file, *self.also)


FIGURES: dict[str, Figure] = {}


def figure(kind, *, file, inline=False, regenerate=None, name=None, also=()):
    def register(fn):
        fig_name = name or fn.__name__.removeprefix("fig_")
        FIGURES[fig_name] = Figure(fig_name, kind, fn, file, inline, regenerate,
                                   tuple(also))
        return fn

    return register


# --- formatting -------------------------------------------------------------------------


def table(header, rows, align=None) -> str:
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def g(x, digits=3) -> str:
    return f"{x:.{digits}g}"


def e(x, digits=1) -> str:
    return f"{x:.{digits}e}"


def signed(x) -> str:
    return f"{x:+.1f}".replace("-", "−")


def minus(text: str) -> str:
    return text.replace("-", "−")


def _jax():
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def _bench(name):
    return json.loads((BENCH / f"{name}.json").read_text())


def measured_on(env) -> str:
    torch = env.get("torch")
    torch_part = ""
    if torch:
        threads = env.get("torch_threads", {}).get("threads_used")
        torch_part = f", PyTorch {torch.split('+')[0]}" + (
            f" ({threads} thread)" if threads == 1 else f" ({threads} threads)"
            if threads else "")
    load = env.get("load_average_at_start")
    load_part = f", load average {min(load):.1f}–{max(load):.1f} at the start" if load else ""
    return (f"measured on {env['cpu_count']} {env['cpu_model']} cores "
            f"({env['jax_backend']}), JAX {env['jax']}{torch_part}{load_part}")


# --- fast: Jacobians and spectra (recomputed) --------------------------------------------


def _hutchinson_model():
    _jax()
    import jax.random as jr

    import contdepth as cd

    field = cd.MLPField(64, 32, 1, key=jr.PRNGKey(0))
    model = cd.EulerResNet(field, num_steps=6, horizon=1.0)
    y = jr.normal(jr.PRNGKey(1), (64,))
    return model, y


@figure("fast", file=JACOBIANS)
def fig_hutchinson():
    """Hutchinson estimates of ||J||_F^2 for the README's snippet (key PRNGKey(2))."""
    import jax.numpy as jnp
    import jax.random as jr

    import contdepth as cd

    model, y = _hutchinson_model()
    exact = float(jnp.sum(cd.jacobian(model, y) ** 2))
    rows = []
    for probes in (16, 64, 256):
        est = cd.jacobian_frobenius(model, y, num_probes=probes, key=jr.PRNGKey(2))
        m, se = float(est.estimate), float(est.standard_error)
        rows.append([probes, f"{m:.2f}", f"{se:.2f}", signed((m - exact) / se)])
    out = table(["probes", "estimate of ‖J‖_F²", "std. error", "(est − exact)/SE"], rows,
                ["---:"] * 4)
    return out + (f"\n\n(exact ‖J‖_F² = {exact:.2f} from the dense Jacobian; every "
                  "estimate uses `key=jr.PRNGKey(2)`; tested: within 3 standard errors.)")


@figure("fast", inline=True, file=JACOBIANS)
def fig_logdet_plain():
    """log|det J| of a depth-200 tanh PlainNet, d = 8."""
    jax = _jax()
    import jax.numpy as jnp
    import jax.random as jr

    import contdepth as cd

    model = cd.PlainNet(8, 200, key=jr.PRNGKey(0))
    y = jr.normal(jr.PRNGKey(1), (8,))
    logdet = float(cd.log_det_jacobian(model, y))
    _, dense = jnp.linalg.slogdet(jax.jacfwd(model)(y))
    return (f"for a depth-200 tanh `PlainNet` (d = 8, `key=jr.PRNGKey(0)`, "
            f"`y = jr.normal(jr.PRNGKey(1), (8,))`) it gives {minus(f'{logdet:.1f}')} "
            f"where `slogdet` of the dense Jacobian gives {minus(f'{float(dense):.1f}')} "
            "(its smallest singular values are lost to round-off)")


@figure("fast", inline=True, file=JACOBIANS)
def fig_lyapunov_nonnormal():
    _jax()
    import jax.numpy as jnp

    import contdepth as cd

    field = cd.LinearField(jnp.array([[-1.0, 20.0], [0.0, -2.0]]))
    exps = cd.lyapunov_exponents(field, jnp.ones(2), 2.0, num_steps=200)
    log_sigma = jnp.log(cd.singular_values(cd.EulerResNet(field, 200, 2.0), jnp.ones(2))) / 2

    def vec(v):
        return minus("[" + ", ".join(f"{float(x):.4f}" for x in v) + "]")

    return (f"QR `{vec(exps)}` (default key) vs `log σ/T` `{vec(log_sigma)}`, both "
            f"summing to {minus(f'{float(jnp.sum(exps)):.13f}')}")


def _linear_test_matrix():
    import numpy as np

    d = np.zeros((4, 4))
    d[0, 0], d[3, 3] = 0.2, -1.5
    d[1:3, 1:3] = [[-0.5, 2.0], [-2.0, -0.5]]
    p = np.eye(4) + 0.3 * np.roll(np.eye(4), 1, axis=1)
    return p @ d @ np.linalg.inv(p)


@figure("fast", file=JACOBIANS)
def fig_lyapunov_table():
    _jax()
    import jax.numpy as jnp
    import numpy as np

    import contdepth as cd

    a = _linear_test_matrix()
    lam = np.sort(np.linalg.eigvals(a).real)
    field = cd.LinearField(jnp.asarray(a))
    horizons = (125, 500, 2000, 8000)
    errors = []
    for t in horizons:
        exps = cd.lyapunov_exponents(field, jnp.ones(4), float(t), num_steps=8 * t,
                                     method="rk4")
        errors.append(float(np.max(np.abs(np.sort(np.asarray(exps)) - lam))))
    return table(["T (RK4, h = 1/8)", *map(str, horizons)],
                 [["max error vs Re λ, λ ∈ {0.2, −0.5±2i, −1.5}", *map(e, errors)]],
                 ["---"] + ["---:"] * len(horizons))


@figure("fast", file=JACOBIANS)
def fig_stability_table():
    """sigma_max of N Euler / RK4 steps on the rotation field b = 3, T = 2."""
    _jax()
    import jax.numpy as jnp

    import contdepth as cd

    b, horizon = 3.0, 2.0
    rot = cd.LinearField(jnp.array([[0.0, b], [-b, 0.0]]))
    rows = []
    for n in (4, 16, 64, 256):
        h = horizon / n
        euler = float(cd.singular_values(cd.EulerResNet(rot, n, horizon), jnp.ones(2))[0])
        z = h * rot.matrix
        step = jnp.eye(2) + z + z @ z / 2 + z @ z @ z / 6 + z @ z @ z @ z / 24
        rk4 = float(jnp.linalg.svd(jnp.linalg.matrix_power(step, n), compute_uv=False)[0])
        rk4_text = f"{rk4:.4f}" if 1 - rk4 > 1e-2 else f"1 − {1 - rk4:.1e}"
        rows.append([n, f"{h * b:.3g}", f"{euler:.4g}", rk4_text])
    return table(["N (T = 2, b = 3)", "h·b", "Euler σ_max = (1+h²b²)^{N/2}", "RK4 σ"], rows,
                 ["---:"] * 4)


@figure("fast", file=JACOBIANS)
def fig_layer_gradients():
    _jax()
    import jax.numpy as jnp
    import jax.random as jr

    import contdepth as cd

    key, y = jr.PRNGKey(0), jr.normal(jr.PRNGKey(1), (8,))
    field = cd.MLPField(8, 16, 1, key=key)
    models = [cd.PlainNet(8, 40, key=key), cd.EulerResNet(field, 40, 1.0),
              cd.EulerResNet(field, 40, 40.0)]
    norms = [cd.layer_gradient_norms(m, jnp.sum, y) for m in models]
    rows = [[k, *(g(float(n[k])) for n in norms)] for k in (0, 20, 40)]
    return table(["k", "tanh PlainNet", "EulerResNet (T = 1)", "unscaled ResNet (h = 1)"],
                 rows, ["---:"] * 4) + (
        "\n\n(d = 8; `PlainNet(8, 40, key=jr.PRNGKey(0))`, the Euler nets on "
        "`MLPField(8, 16, 1, key=jr.PRNGKey(0))`, `y = jr.normal(jr.PRNGKey(1), (8,))`.)")


@figure("fast", inline=True, file=DEPTH_SWEEP)
def fig_unscaled_growth():
    _jax()
    import jax.random as jr

    import contdepth as cd

    y = jr.normal(jr.PRNGKey(1), (4,))
    depths = (1, 16, 64, 256, 1024)
    parts = []
    for k in (0, 1, 2, 3):
        field = cd.MLPField(4, 16, 1, key=jr.PRNGKey(k))
        inv = [1 / float(cd.singular_values(cd.EulerResNet(field, n, float(n)), y)[-1])
               for n in depths]
        parts.append(f"key {k}: " + ", ".join(g(v, 2) for v in inv))
    return (f"`1/σ_min` of the unscaled stack on `MLPField(4, 16, 1, key=jr.PRNGKey(k))` "
            f"from `y = jr.normal(jr.PRNGKey(1), (4,))` at N = {', '.join(map(str, depths))}"
            f" is {'; '.join(parts)}")


def regenerate_float32():
    (RESULTS / "float32_vs_float64.md").write_text(_float32_table() + "\n")


@figure("slow", regenerate=regenerate_float32, file=ERRORS)
def fig_float32_vs_float64():
    """Stored: the NeuralODE row compiles for ~20 s, too slow for every check."""
    return (RESULTS / "float32_vs_float64.md").read_text()


def _float32_table():
    """The test models of tests/test_reliability.py, with the key its first draw uses."""
    jax = _jax()
    import equinox as eqx
    import jax.numpy as jnp
    import jax.random as jr

    import contdepth as cd

    sys.path.insert(0, str(ROOT))
    from tests.helpers import make_model

    def cast(tree, dtype):
        return jax.tree.map(
            lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, tree)

    call = eqx.filter_jit(lambda model, y: model(y))
    names = {"euler": "EulerResNet", "ode": "NeuralODE", "plain": "PlainNet",
             "highway": "HighwayNet", "scaled": "ScaledResidualNet"}
    rows = []
    for kind, label in names.items():
        model64, y64 = make_model(kind, jr.fold_in(jr.PRNGKey(5678), 0))
        if kind == "ode":
            model64 = cd.NeuralODE(model64.field, 1.0, rtol=1e-7, atol=1e-9)
        model32 = cast(model64, jnp.float32)
        out64, out32 = call(model64, y64), call(model32, y64.astype(jnp.float32))
        rel = float(jnp.max(jnp.abs(out32 - out64)) / jnp.max(jnp.abs(out64)))
        mixed = call(model32, y64)
        same = bool(jnp.all(mixed == call(cast(model32, jnp.float64), y64)))
        rows.append([label, e(rel), f"{mixed.dtype}, "
                     + ("bit-equal to upcast weights" if same else "NOT bit-equal")])
    return table(["model", "max rel. difference, float32 vs float64",
                  "float64 input + float32 weights"], rows)


# --- slow: stored results under docs/results, rewritten by --regenerate ----------------


def _run(cmd, out: pathlib.Path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True)
    out.write_text(proc.stdout)


def regenerate_sweep():
    _experiment("sweep", "sweep", "--untied", "smooth", "iid", "--no-progress")


def _sweep_result():
    data = json.loads((RESULTS / "sweep" / "sweep.json").read_text())
    stdout = (RESULTS / "sweep" / "stdout.txt").read_text()
    timing = re.search(r"trained in ([\d.]+) s, swept in ([\d.]+) s", stdout)
    return data, stdout, timing


@figure("slow", regenerate=regenerate_sweep, file=README,
        also=(GETTING_STARTED,))
def fig_sweep_job():
    """`make sweep` (`contdepth sweep --untied smooth iid`): its printed tables, from
    docs/results/sweep/."""
    markdown = (RESULTS / "sweep" / "sweep.md").read_text().strip()
    _, _, timing = _sweep_result()
    return (f"Output of `make sweep` (float32, default flags plus `--untied smooth iid`; "
            f"trained in {timing[1]} s, swept in {timing[2]} s; stored in "
            f"`docs/results/sweep/`):\n\n{markdown}")


@figure("slow", inline=True, regenerate=regenerate_sweep, file=README,
        also=(GETTING_STARTED,))
def fig_sweep_accuracy():
    data, _, _ = _sweep_result()
    text = (RESULTS / "sweep" / "sweep.md").read_text()
    rows = [line for line in text.splitlines() if re.match(r"\| \d", line)]
    first = float(rows[0].split("|")[-2])
    ode = float(re.search(r"accuracy = ([\d.]+)", text)[1])
    return f"{100 * first:.1f}% → {100 * ode:.1f}%"


def regenerate_train():
    _run([sys.executable, "-m", "contdepth._cli", "train", "--model", "euler", "ode",
          "plain", "--no-progress"], RESULTS / "train_stdout.txt")


@figure("slow", regenerate=regenerate_train, file=TRAINING)
def fig_train_table():
    text = (RESULTS / "train_stdout.txt").read_text()
    return "\n".join(line for line in text.splitlines() if line.startswith("|"))


def regenerate_checkpoint():
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import optax

    import contdepth as cd

    model = cd.make_classifier("euler", num_features=64, num_classes=10,
                               key=jr.PRNGKey(0))
    # float32 weights whether or not another figure switched x64 on.
    model = jax.tree.map(
        lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, model)
    opt_state = optax.adam(1e-3).init(eqx.filter(model, eqx.is_inexact_array))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.ckpt")
        saves, loads = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            cd.save(path, model, opt_state, step=1)
            saves.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            cd.load(path, like=model, opt_state_like=opt_state)
            loads.append(time.perf_counter() - t0)
        raw = pathlib.Path(path).read_bytes()
    header_end = raw.index(b"\n", raw.index(b"\n") + 1) + 1  # magic line, JSON header
    result = {
        "parameters": cd.count_parameters(model),
        "file_bytes": len(raw),
        "header_bytes": header_end,
        "save_ms_median": 1e3 * sorted(saves)[2],
        "load_ms_median": 1e3 * sorted(loads)[2],
        "environment": f"{os.cpu_count()} CPU cores, float32 weights",
    }
    (RESULTS / "checkpoint.json").write_text(json.dumps(result, indent=1) + "\n")


@figure("slow", inline=True, regenerate=regenerate_checkpoint, file=CHECKPOINTS)
def fig_checkpoint():
    r = json.loads((RESULTS / "checkpoint.json").read_text())
    return (f"A digits classifier ({r['parameters']:,} parameters, with its Adam state) "
            f"makes a {r['file_bytes'] / 1e3:.0f} kB file, of which the header is "
            f"{r['header_bytes'] / 1e3:.0f} kB. Save and load take "
            f"{r['save_ms_median']:.0f} ms and {r['load_ms_median']:.0f} ms (medians of 5, "
            f"{r['environment']}; `docs/results/checkpoint.json`).")


_TRAIN_COMPILE = """
import json, os, sys, time
import jax.random as jr, optax
import contdepth as cd
train, _ = cd.datasets.digits()
seconds = []
for key in (0, 1):
    model = cd.make_classifier("ode", num_features=64, num_classes=10, depth=8,
                               key=jr.PRNGKey(key))
    t0 = time.perf_counter()
    cd.train(model, train, steps=10, batch_size=128, key=jr.PRNGKey(1),
             optimizer=optax.adam(1e-3), progress=False)
    seconds.append(time.perf_counter() - t0)
print(json.dumps({"first_s": seconds[0], "second_s": seconds[1],
                  "environment": f"{os.cpu_count()} CPU cores, float32"}))
"""


def regenerate_train_compile():
    _run([sys.executable, "-c", _TRAIN_COMPILE], RESULTS / "train_compile.json")


@figure("slow", inline=True, regenerate=regenerate_train_compile, file=TRAINING)
def fig_train_compile():
    r = json.loads((RESULTS / "train_compile.json").read_text())
    return (f"Measured (`docs/results/train_compile.json`): 10 steps of the digits "
            f"`NeuralODE` classifier take {r['first_s']:.1f} s on the first call, "
            f"compilation included, and {r['second_s']:.2f} s on the second call with a "
            f"new model and a new optimiser ({100 * r['second_s'] / r['first_s']:.0f} % "
            f"of the first; {r['environment']}).")


def regenerate_spiral():
    """`contdepth fit-spiral --compare-torch`; the torch side needs a Python with torch
    and torchdiffeq: `CONTDEPTH_TORCH_PYTHON=/path/to/python` (default: this one)."""
    out = RESULTS / "spiral"
    out.mkdir(parents=True, exist_ok=True)
    python = os.environ.get("CONTDEPTH_TORCH_PYTHON", sys.executable)
    _run([python, "-m", "contdepth._cli", "fit-spiral", "--compare-torch",
          "--no-progress", "--out", str(out)], out / "stdout.txt")
    shutil.move(out / "spiral.png", ROOT / "docs" / "spiral.png")


@figure("slow", regenerate=regenerate_spiral, file=TRAINING)
def fig_spiral():
    r = json.loads((RESULTS / "spiral" / "spiral.json").read_text())
    s, t = r["settings"], r["torch"]
    rows = [["contdepth (`cd.train` + diffrax)", e(r["mse"], 2), g(r["mae"]),
             e(r["last_mse"], 2), f"{r['seconds']:.1f} ({r['compile_seconds']:.1f})"]]
    if t is not None:
        rows.append([f"torchdiffeq {t['torchdiffeq']} (torch "
                     f"{t['torch']}, {t['threads']} thread)", e(t["mse"], 2),
                     g(t["mae"]), e(t["last_mse"], 2), f"{t['seconds']:.1f}"])
    ratio = (f" contdepth takes {r['seconds'] / t['seconds']:.2f}× torchdiffeq's wall "
             "time, compilation included." if t is not None else "")
    return (table(["run", "full-trajectory MSE (best of evaluations)", "MAE",
                   "last-iterate MSE", "wall s (of which compile)"], rows)
            + f"\n\n{s['iterations']} iterations, seed {s['seed']}, float32, "
            f"{s['solver']} at rtol {s['rtol']:g} / atol {s['atol']:g}, AdamW "
            f"{s['learning_rate']:g} → {s['final_learning_rate']:g} (cosine), weight "
            f"decay {s['weight_decay']:g}, {s['loss'].upper()} loss on the segments; the "
            "torchdiffeq run replays the same initial weights, batches and per-step "
            f"learning rates (`docs/results/spiral/`).{ratio}")


def _experiment(command: str, name: str, *flags: str):
    """Run `contdepth COMMAND [FLAGS] --out docs/results/NAME` (defaults, fixed seed)
    and move its plot to `docs/NAME.png`."""
    out = RESULTS / name
    out.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "contdepth._cli", command, *flags, "--out", str(out)],
         out / "stdout.txt")
    shutil.move(out / f"{name}.png", ROOT / "docs" / f"{name}.png")


def _fit(f) -> str:
    return minus(f"{f['slope']:+.3f}") + f" ± {f['slope_stderr']:.3f}"


def regenerate_smooth_stays_smooth():
    _experiment("smooth-stays-smooth", "smooth_stays_smooth")


@figure("slow", regenerate=regenerate_smooth_stays_smooth, file=REPRODUCED)
def fig_smooth_stays_smooth():
    """Marion et al. 2024: max increment of the trained weights against depth L."""
    r = json.loads((RESULTS / "smooth_stays_smooth" / "smooth_stays_smooth.json")
                   .read_text())
    s = r["ours"]

    def gmean(xs):
        return math.exp(sum(math.log(x) for x in xs) / len(xs))

    rows = []
    for a, b in zip(r["results"]["smooth"], r["results"]["iid"]):
        rows.append([a["depth"], g(gmean(a["max_increment"])),
                     g(gmean(b["max_increment"])),
                     f"{g(gmean(a['initial_loss']))} → {g(gmean(a['final_loss']))}",
                     f"{g(gmean(b['initial_loss']))} → {g(gmean(b['final_loss']))}"])
    rows.append(["**log–log slope**", _fit(r["fits"]["smooth"]),
                 _fit(r["fits"]["iid"]), "", ""])
    per_seed = {k: ", ".join(minus(f"{x:.2f}") for x in v["seed_slopes"])
                for k, v in r["fits"].items()}
    return (table(["L", "max_k ‖Z_k+1 − Z_k‖_F, smooth init",
                   "same, i.i.d. init", "loss, smooth", "loss, i.i.d."], rows)
            + f"\n\nGeometric means over {s['num_seeds']} seeds (slopes per seed: "
            f"smooth {per_seed['smooth']}; i.i.d. {per_seed['iid']}); "
            f"d = {s['dim']}, hidden {s['hidden']}, {s['activation']}, "
            f"{s['optimiser']} for {s['steps']} steps at step size {s['lr']:g}·L on "
            f"{s['num_samples']} samples, {s['dtype']}; "
            f"{r['seconds']:.0f} s (`docs/results/smooth_stays_smooth/`).")


def regenerate_scaling_regimes():
    _experiment("scaling-regimes", "scaling_regimes")


@figure("slow", regenerate=regenerate_scaling_regimes, file=REPRODUCED)
def fig_scaling_regimes():
    """Cohen et al. 2021 / Marion et al. 2025: regimes of L^-beta at initialisation."""
    r = json.loads((RESULTS / "scaling_regimes" / "scaling_regimes.json").read_text())
    iid, heat = r["iid"], r["heatmap"]
    theory = {0.25: "explodes", 0.5: "0 (SDE limit)", 0.75: "−0.25", 1.0: "−0.5"}
    rows = []
    for key, p in iid["panels"].items():
        beta = float(key.split("=")[1])
        rows.append([f"{beta:g}", f"{g(p['ratio_mean'][0])} ± {e(p['ratio_se'][0])}",
                     f"{g(p['ratio_mean'][-1])} ± {e(p['ratio_se'][-1])}",
                     g(p["sigma_max_mean"][-1]), _fit(p["fit_ratio_vs_L"]),
                     theory.get(beta, "")])
    first, last = iid["settings"]["depths"][0], iid["settings"]["depths"][-1]
    crossings = ", ".join(f"{h:g}: {c:.2f}" for h, c in
                          zip(heat["hursts"], heat["measured_critical_beta"]))
    hs = heat["settings"]
    return (table(["β", f"‖h_L − h_0‖/‖h_0‖ at L = {first}", f"at L = {last}",
                   f"σ_max(∂h_L/∂h_0) at L = {last}", "fitted exponent in L",
                   "theory L^(1/2 − β)"], rows)
            + f"\n\nMean ± standard error over {iid['settings']['num_keys']} keys, "
            f"d = {iid['settings']['dim']}, {iid['settings']['network']}, "
            f"{iid['settings']['weights']}, {iid['settings']['dtype']}. Weights "
            f"correlated across depth (fractional Gaussian noise of Hurst index H, "
            f"L = {hs['depth']}, {hs['num_keys']} keys): the measured critical β "
            f"(where the ratio crosses its level at (H, β) = (½, ½)) per H is "
            f"{crossings} — the line β = H. {r['seconds']:.0f} s "
            "(`docs/results/scaling_regimes/`).")


# --- README: one line per reproduced result, from the stored results above ------------


def _sweep_rows():
    """The rows of the sweep's first table (the trained field's Euler ResNet per N)."""
    text = (RESULTS / "sweep" / "sweep.md").read_text()
    first_table = text.split("\n\n| N |")[1]
    return [[c.strip() for c in line.strip("|").split("|")]
            for line in first_table.split("\n\n")[0].splitlines()
            if re.match(r"\| \d", line)]


@figure("slow", file=README)
def fig_readme_results():
    """The README's list of reproduced results: one line each, linking to its page."""
    rows = _sweep_rows()
    header = (RESULTS / "sweep" / "sweep.md").read_text().splitlines()
    col = next(line for line in header if line.startswith("| N |")).strip("|").split("|")
    jac = [c.strip() for c in col].index("‖J_N−J_ode‖/‖J_ode‖")
    spiral = json.loads((RESULTS / "spiral" / "spiral.json").read_text())
    smooth = json.loads((RESULTS / "smooth_stays_smooth" / "smooth_stays_smooth.json")
                        .read_text())["fits"]
    regimes = json.loads((RESULTS / "scaling_regimes" / "scaling_regimes.json")
                         .read_text())
    panels = {float(k.split("=")[1]): p["fit_ratio_vs_L"]
              for k, p in regimes["iid"]["panels"].items()}
    heat = regimes["heatmap"]
    roo = json.loads((RESULTS / "resnet_or_ode" / "resnet_or_ode.json").read_text())[
        "fits"]
    worst = max(abs(c - h) for h, c in zip(heat["hursts"], heat["measured_critical_beta"])
                if h >= 0.3)
    torch = spiral["torch"]
    versus = (f" vs torchdiffeq's {e(torch['mse'], 2)} on the same run, in "
              f"{spiral['seconds'] / torch['seconds']:.2f}× its wall time"
              if torch is not None else "")
    lines = [
        f"- **Depth as time** (Haber & Ruthotto 2017; Chen et al. 2018): a trained "
        f"ResNet's Jacobian converges to its Neural ODE's as `1/N`, "
        f"‖J_N − J_ode‖/‖J_ode‖ = {rows[0][jac]} at N = {rows[0][0]} and {rows[-1][jac]} "
        f"at N = {rows[-1][0]} (the main job above; "
        "[one field, two models](docs/one-field-two-models.md)).",
        f"- **torchdiffeq's spiral demo** (Chen et al. 2018) on `cd.train`: "
        f"full-trajectory MSE {e(spiral['mse'], 2)}{versus} "
        "([training](docs/training.md)).",
        f"- **Smooth stays smooth** (Marion et al. 2024): the trained weights' max "
        f"increment in depth falls as L^{_fit(smooth['smooth'])} from a smooth "
        f"initialisation (paper: −1) and as L^{_fit(smooth['iid'])} from an i.i.d. one "
        "([reproduced results](docs/reproduced-results.md)).",
        f"- **Scaling regimes** (Cohen et al. 2021; Marion et al. 2025): "
        f"‖h_L − h_0‖/‖h_0‖ ~ L^(1/2 − β), fitted {_fit(panels[0.75])} at β = 0.75 and "
        f"{_fit(panels[1.0])} at β = 1; with weights of Hurst index H across depth the "
        f"critical β is H (within {worst:.2f} for H ≥ 0.3) "
        "([reproduced results](docs/reproduced-results.md)).",
        f"- **Is a trained ResNet an ODE?** (Sander et al. 2022): on digits, the gap "
        f"between a trained untied ResNet and its depth refinement falls as "
        f"N^{_fit(roo['refine_gap']['smooth'])} from a smooth initialisation and as "
        f"N^{_fit(roo['refine_gap']['iid'])} from an i.i.d. one; the memory-free "
        f"backward's gradient error falls as N^{_fit(roo['mf_error_euler']['smooth'])} "
        "([reproduced results](docs/reproduced-results.md)).",
    ]
    return "\n".join(lines)


def regenerate_resnet_or_ode():
    _experiment("resnet-or-ode", "resnet_or_ode")


@figure("slow", regenerate=regenerate_resnet_or_ode, file=REPRODUCED)
def fig_resnet_or_ode():
    """Sander et al. 2022: trained untied ResNets against their refinement and ODE."""
    r = json.loads((RESULTS / "resnet_or_ode" / "resnet_or_ode.json").read_text())
    s, res, fits = r["ours"], r["results"], r["fits"]

    def mean(xs):
        return sum(xs) / len(xs)

    rows = []
    for i, (a, b) in enumerate(zip(res["smooth"], res["iid"])):
        rows.append([a["depth"], f"{mean(a['accuracy']):.3f} / {mean(b['accuracy']):.3f}",
                     f"{g(mean(a['max_increment']))} / {g(mean(b['max_increment']))}",
                     f"{g(mean(a['refine_gap']))} / {g(mean(b['refine_gap']))}",
                     f"{g(mean(a['ode_gap']))} / {g(mean(b['ode_gap']))}",
                     f"{g(mean(a['mf_error_euler']))} / {g(mean(b['mf_error_euler']))}",
                     f"{g(mean(a['mf_error_corrected']))} / "
                     f"{g(mean(b['mf_error_corrected']))}"])
    slope = ["**slope in N**", "", *(
        f"{_fit(fits[k]['smooth'])} / {_fit(fits[k]['iid'])}"
        for k in ("max_increment", "refine_gap", "ode_gap", "mf_error_euler",
                  "mf_error_corrected"))]
    rows.append(slope)
    mf = r["memory_free_training"]
    mf_line = ""
    if mf is not None:
        acc = [mean(x) for x in mf["accuracy"]]
        exact = [mean(x) for x in mf["exact_accuracy"]]
        mf_line = (f" Trained at N = {mf['depth']} with the memory-free backward "
                   f"(`{mf['reconstruction']}`) as its gradient: test accuracy "
                   f"{acc[0]:.3f} (smooth) and {acc[1]:.3f} (i.i.d.), against "
                   f"{exact[0]:.3f} and {exact[1]:.3f} with exact backprop.")
    return (table(["N", "test acc (smooth / i.i.d.)", "max_k ‖θ_k+1 − θ_k‖",
                   "gap to 4× refined net", "gap to Neural ODE",
                   "memory-free grad. error, euler", "same, corrected"], rows)
            + f"\n\nEach cell: smooth init / i.i.d. init. Gaps: mean over test samples "
            "of ‖a(z) − b(z)‖ relative to how far the trained body moves z. "
            f"{s['data']}; `x + V_k {s['activation']}(W_k x)/N`, d = {s['dim']}, hidden "
            f"{s['hidden']}, {s['optimiser']}, {s['steps']} steps of batch "
            f"{s['batch_size']} at lr {s['lr']:g}, {s['num_seeds']} seed(s), "
            f"{s['dtype']}.{mf_line} {r['seconds']:.0f} s "
            "(`docs/results/resnet_or_ode/`).")


def _printed_tables(name: str) -> str:
    """The markdown tables a `contdepth` experiment printed (its stored stdout)."""
    text = (RESULTS / name / "stdout.txt").read_text()
    blocks, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append("\n".join(current))
            current = []
    if current:
        blocks.append("\n".join(current))
    return "\n\n".join(blocks)


def _seconds(name: str) -> str:
    text = (RESULTS / name / "stdout.txt").read_text()
    found = re.findall(r"\(([\d.]+) s\)", text)
    return f"; {float(found[-1]):.0f} s" if found else ""


def regenerate_robustness():
    _experiment("robustness", "robustness")


@figure("slow", regenerate=regenerate_robustness, file=CONTROL)
def fig_robustness():
    """`contdepth robustness`: plain vs Jacobian-regularised vs spectral-norm fields."""
    return (_printed_tables("robustness") + "\n\n`contdepth robustness` defaults "
            f"(seed 0, float32{_seconds('robustness')}; `docs/results/robustness/`).")


def regenerate_circles():
    _experiment("circles", "circles")


@figure("slow", regenerate=regenerate_circles, file=CONTROL)
def fig_circles():
    """`contdepth circles`: plain vs augmented Neural ODE (Dupont et al. 2019)."""
    return (_printed_tables("circles") + "\n\n`contdepth circles` defaults (seed 0, "
            f"float32{_seconds('circles')}; `docs/results/circles/`).")


def regenerate_cnf():
    _experiment("fit-cnf", "cnf", "--no-progress")


@figure("slow", regenerate=regenerate_cnf, file=CONTROL)
def fig_cnf():
    """`contdepth fit-cnf`: RNODE vs unregularised CNF, exact vs Hutchinson."""
    return (_printed_tables("cnf") + "\n\n`contdepth fit-cnf` defaults (eight "
            "Gaussians, seed 0, float32; `docs/results/cnf/`).")


def regenerate_test_suite():
    """Time the README's test command's pytest run (`make test`'s `-n auto --dist
    loadfile --no-loadscope-reorder`, the environment's venv) with per-module
    durations: `docs/results/test_suite.json` (which also orders the next run's
    modules, slowest first: `tests/conftest.py`)."""
    # Less the one check that reads this very result (it cannot pass before it exists).
    cmd = [sys.executable, "-m", "pytest", "-q", "-n", "auto", "--dist", "loadfile",
           "--no-loadscope-reorder", "--durations=0", "-p", "no:cacheprovider", "--deselect",
           "tests/test_readme_figures.py::test_readme_figures_are_current[stored]"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    summary = re.search(r"(\d+) passed", proc.stdout)
    if proc.returncode != 0 or summary is None:
        raise RuntimeError(f"the test suite failed:\n{proc.stdout[-3000:]}")
    modules: dict[str, float] = {}
    for m in re.finditer(r"^([\d.]+)s (?:call|setup|teardown)\s+(tests/[\w/]+\.py)",
                         proc.stdout, flags=re.M):
        modules[m[2]] = modules.get(m[2], 0.0) + float(m[1])
    result = {
        "passed": int(summary[1]),
        "seconds": seconds,
        "cores": os.cpu_count(),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "module_seconds": dict(sorted(modules.items(), key=lambda kv: -kv[1])),
    }
    (RESULTS / "test_suite.json").write_text(json.dumps(result, indent=1) + "\n")


@figure("slow", inline=True, regenerate=regenerate_test_suite, file=DEVELOPMENT,
        also=(README,))
def fig_test_suite():
    r = json.loads((RESULTS / "test_suite.json").read_text())
    top = ", ".join(f"`{k.removeprefix('tests/')}` {v:.0f} s"
                    for k, v in list(r["module_seconds"].items())[:3])
    return (f"Measured: {r['passed']} tests (all but the stored-figures check) in "
            f"{r['seconds'] / 60:.1f} min on {r['cores']} cores (the slowest modules, summed over their tests: {top}; "
            "`docs/results/test_suite.json`).")


# --- measured: benchmarks/results/*.json -------------------------------------------------


@figure("measured", file=PERFORMANCE)
def fig_bench_environment():
    s = _bench("summary")
    return (f"**Measured on:** {measured_on(s['environment']).removeprefix('measured on ')} "
            f"(`benchmarks/results/summary.json`; full suite {s['seconds'] / 60:.0f} min).")


@figure("measured", file=PERFORMANCE)
def fig_bench_targets():
    s = _bench("summary")
    rows = [[t["target"], t["measured"], "yes" if t["met"] else "**no**"]
            for t in s["targets"] if not t.get("informative")]
    return table(["target", "measured", "met?"], rows)


@figure("measured", inline=True, file=PERFORMANCE)
def fig_bench_peak():
    p = _bench("peak")
    return f"{p['peak_gflops']:.1f} GFLOP/s"


@figure("measured", inline=True, file=PERFORMANCE)
def fig_bench_jacobian_modes():
    rows = {r["impl"]: r["median_ms"] for r in fp32_rows(_bench("jacobian"))}
    fwd, rev = rows["contdepth cd.jacobian (fwd)"], rows["contdepth cd.jacobian (rev)"]
    best_torch = min(v for k, v in rows.items() if k.startswith("torch"))
    return (f"{fwd / rev:.1f}× slower than reverse mode and {best_torch / fwd:.2f}× the "
            f"speed of `torch.func`; reverse mode reached {best_torch / rev:.2f}×")


@figure("measured", inline=True, file=PERFORMANCE)
def fig_bench_adaptive_steps():
    rows = [r for r in fp32_rows(_bench("adaptive")) if r["solver"] == "dopri5"]
    ours = {r["steps"] for r in rows if r["impl"].startswith("contdepth")}
    theirs = {r["steps"] for r in rows if r["impl"].startswith("torchdiffeq")}
    return (f"diffrax took {'/'.join(map(str, sorted(ours)))} steps, torchdiffeq "
            f"{'/'.join(map(str, sorted(theirs)))}")


EULER_IMPLS = {
    "contdepth fast path": "`cd.batched_apply`",
    "contdepth vmap": "`jax.vmap(cd.EulerResNet)`",
    "diffrax Euler": "diffrax Euler",
    "torch eager loop": "PyTorch eager loop",
    "torchdiffeq euler": "torchdiffeq euler",
}


def fp32_rows(result: dict) -> list[dict]:
    """The rows measured at full FP32 (all rows of a run that predates precisions)."""
    return [r for r in result["rows"] if r.get("precision", "fp32") == "fp32"]


def _euler_table(result: dict, precision: str) -> str:
    by = {(r["case"], r["what"], r["impl"]): r for r in result["rows"]
          if r.get("precision", "fp32") == precision}
    rows = []
    for case in ("overhead-bound", "compute-bound"):
        first = True
        for impl, label in EULER_IMPLS.items():
            fwd, grad = by.get((case, "forward", impl)), by.get((case, "forward+gradient", impl))
            if fwd is None:
                continue

            def ratio(other):
                theirs = by.get((case, "forward+gradient", other))
                return "—" if theirs is None else f"{theirs['median_ms'] / grad['median_ms']:.2f}×"

            size = f"{case} (B{fwd['batch']} d{fwd['dim']} w{fwd['width']})" if first else ""
            peak = grad.get("frac_peak (same rounds)", grad.get("frac_peak"))
            rows.append([size, label, f"{fwd['median_ms']:.1f}", f"{grad['median_ms']:.1f}",
                         ratio("torch eager loop"), ratio("torchdiffeq euler"),
                         ratio("diffrax Euler"),
                         "—" if peak is None else f"{100 * peak:.0f} %",
                         "—" if grad.get("compile_ms") is None
                         else f"{grad['compile_ms'] / 1e3:.2f}"])
            first = False
    return table(["case", "implementation", "fwd", "fwd+grad", "vs PyTorch eager",
                  "vs torchdiffeq", "vs diffrax", "of peak", "compile s"], rows)


@figure("measured", file=PERFORMANCE)
def fig_bench_euler():
    result = _bench("euler")
    precisions = result.get("precisions", ["fp32"])
    names = {"fp32": "full FP32 on both sides", "tf32": "TF32 on both sides"}
    blocks = [f"**{p}** ({names.get(p, p)}):\n\n{_euler_table(result, p)}"
              for p in precisions]
    return (f"Euler ResNet (N = 100, T = 1, MLP with 2 hidden tanh layers), ms; "
            "\"vs X\" is X's fwd+grad time over this row's (above 1: this row is "
            "faster); \"of peak\": fwd+grad GFLOP/s over the float32 matmul peak timed "
            "in the same rounds; \"compile s\": first fwd+grad call minus the median; "
            f"{measured_on(result['environment'])}:\n\n" + "\n\n".join(blocks))


@figure("measured", file=PERFORMANCE)
def fig_bench_adaptive():
    result = _bench("adaptive")
    by = {(r["case"], r["what"], r["impl"]): r for r in fp32_rows(result)
          if r["solver"] == "dopri5"}
    ours, theirs = "contdepth (batch as one system)", "torchdiffeq dopri5"

    def cell(case, what, impl):
        r = by.get((case, what, impl))
        return "—" if r is None else f"{r['median_ms']:.1f} ({r['steps']})"

    rows = [[case, *(cell(case, w, i) for w in ("forward", "forward+gradient")
                     for i in (ours, theirs))]
            for case in ("overhead-bound", "compute-bound")]
    rows = [[r[0], r[1], r[2], r[3], r[4]] for r in rows]
    return (f"Adaptive Dopri5 (rtol = atol = 1e-5, batch as one system), ms (steps), "
            f"{measured_on(result['environment'])}:\n\n"
            + table(["case", "contdepth fwd", "torchdiffeq fwd", "contdepth fwd+grad",
                     "torchdiffeq fwd+grad"], rows))


@figure("measured", file=PERFORMANCE)
def fig_bench_other():
    jac = {r["impl"]: r["median_ms"] for r in fp32_rows(_bench("jacobian"))}
    spec = {r["impl"]: r["median_ms"] for r in fp32_rows(_bench("spectra"))}
    comp = _bench("compile")["rows"]
    scan = [r["compile_s (median)"] for r in comp if r["impl"] == "EulerResNet (lax.scan)"]
    scan_n = [r["N"] for r in comp if r["impl"] == "EulerResNet (lax.scan)"]
    unrolled = [r for r in comp if r["impl"] == "Python-unrolled loop"]
    train = {r["impl"]: r["samples/s"] for r in fp32_rows(_bench("training"))}
    return (
        "Other workloads (same environment, `benchmarks/results/*.json`): Jacobians "
        f"(32 states, d = 64, N = 64) `cd.jacobian` forward "
        f"{jac['contdepth cd.jacobian (fwd)']:.0f} ms / reverse "
        f"{jac['contdepth cd.jacobian (rev)']:.0f} ms vs `torch.func` `vmap(jacfwd)` "
        f"{jac['torch.func vmap(jacfwd)']:.0f} ms / `vmap(jacrev)` "
        f"{jac['torch.func vmap(jacrev)']:.0f} ms; top-5 singular values at d = 1024: "
        f"matrix-free Lanczos {spec['matrix-free (Lanczos)'] / 1e3:.2f} s vs dense "
        f"`jacfwd` + SVD {spec['dense (jacfwd + SVD)'] / 1e3:.1f} s; compile time of "
        f"fwd+grad: `lax.scan` {min(scan):.2f}–{max(scan):.2f} s for every N from "
        f"{min(scan_n)} to {max(scan_n)}, Python-unrolled "
        + " / ".join(f"{r['compile_s (median)']:.2g}" for r in unrolled)
        + " s at N = " + " / ".join(str(r["N"]) for r in unrolled)
        + f"; digits training (batch 128, depth 16): EulerResNet "
        f"{train['contdepth EulerResNet (vmap)'] / 1e3:.1f}k samples/s (`jax.vmap`; "
        f"{train['contdepth EulerResNet (fast path)'] / 1e3:.1f}k with `batched_apply`), "
        f"NeuralODE (Tsit5) {train['contdepth NeuralODE (Tsit5)'] / 1e3:.1f}k, PyTorch "
        f"{train['torch EulerResNet'] / 1e3:.1f}k.")


def _matmul_layout():
    return _bench("matmul_layout")


@figure("measured", inline=True, name="matmul_layout", file=PERFORMANCE)
def fig_matmul_layout():
    r = _matmul_layout()
    rates = {row["expr"]: row["GFLOP/s"] for row in r["rows"]}
    return (f"`x @ w.T` {rates['x @ w.T']:.0f} GFLOP/s, `x.T @ x` {rates['x.T @ x']:.0f}, "
            f"`optimization_barrier(x.T) @ x` {rates['optimization_barrier(x.T) @ x']:.0f} "
            f"({measured_on(r['environment'])}; `python benchmarks/matmul_layout.py`)")


@figure("measured", inline=True, file=BENCH_README, name="matmul_layout_bench")
def fig_matmul_layout_bench():
    return fig_matmul_layout()


@figure("measured", file=SCALING_OUT)
def fig_scaling():
    result = _bench("scaling")
    rows = [[r["devices"], f"{r['train_samples_per_s']:,.0f}".replace(",", " "),
             f"{r['train_speedup']:.2f}", f"{r['sweep_seconds']:.2f}",
             f"{r['sweep_speedup']:.2f}"] for r in result["rows"]]
    return table(["devices", "train samples/s", "vs 1 device", "sweep s", "vs 1 device"],
                 rows)


@figure("measured", file=MEMORY)
def fig_memory_peak():
    rows = _bench("memory")["pivot"]
    cols = [k for k in rows[0] if k not in ("model", "gradient")]
    return table(["model", "gradient", *cols],
                 [[r["model"], r["gradient"], *(r[c] for c in cols)] for r in rows])


@figure("measured", file=MEMORY)
def fig_memory_timing():
    rows = [r for r in _bench("memory")["timing"] if r["reversible_ms"] is not None]
    n = rows[0]["N"]
    return (f"Time of one gradient at N = {n} (median of 5, shared CPU, noisy):\n\n"
            + table(["model", "plain ms", "reversible ms", "overhead"],
                    [[r["model"].replace(": ", " (", 1) + ")" if ": " in r["model"]
                      else r["model"], f"{r['plain_ms']:.1f}", f"{r['reversible_ms']:.1f}",
                      f"{r['overhead']:.2f}×"] for r in rows]))


@figure("measured", file=MEMORY)
def fig_memory_drift():
    rows = _bench("memory")["drift"]
    keys = ["momentum_gamma=0.9", "momentum_gamma=1-4/N", "reversible",
            "reversible_heun_ode"]
    return table(["dtype", "N", "momentum γ=0.9", "momentum γ=1−4/N", "ReversibleResNet",
                  "reversible Heun ODE"],
                 [[r["dtype"], r["N"], *(e(r[k]) for k in keys)] for r in rows])


@figure("measured", file=BENCH_README, inline=True)
def fig_bench_suite_time():
    s = _bench("summary")
    return f"~{s['seconds'] / 60:.0f} min, {measured_on(s['environment'])}"


@figure("measured", file=BENCH_README, inline=True)
def fig_bench_forward_fraction():
    rows = [r for r in _bench("euler")["rows"] if r["case"] == "compute-bound"
            and r["what"] == "forward" and r["impl"].startswith("contdepth")]
    fracs = [r["frac_peak (same rounds)"] for r in rows]
    grads = [r["frac_peak (same rounds)"] for r in _bench("euler")["rows"]
             if r["case"] == "compute-bound" and r["what"] == "forward+gradient"
             and r["impl"] == "contdepth vmap"]
    return (f"{100 * min(fracs):.0f}–{100 * max(fracs):.0f} % of the matmul peak timed in "
            f"the same rounds, the generic gradient (`jax.vmap`) {100 * grads[0]:.0f} %")


@figure("measured", file=BENCH_README, inline=True)
def fig_bench_torch_threads():
    calib = _bench("summary")["environment"]["torch_threads"]["calibration_ms"]
    ratio = calib["2"] / calib["1"]
    return (f"{ratio:.1f}x the time of 1 in the stored run's calibration, so "
            f"{'1 thread' if ratio > 1 else '2 threads'} was kept")


# --- driver ------------------------------------------------------------------------------


def marker_pattern(name):
    return re.compile(rf"(<!-- figure:{re.escape(name)} -->)(.*?)(<!-- /figure:{re.escape(name)} -->)",
                      re.S)


def render(fig: Figure) -> str:
    text = fig.render().strip()
    return text if fig.inline else f"\n{text}\n\n"


def apply(names, check: bool) -> int:
    paths = sorted({path for fig in FIGURES.values() for path in fig.files})
    texts = {path: path.read_text(encoding="utf-8") for path in paths}
    new = dict(texts)
    stale = []
    for name in names:
        fig = FIGURES[name]
        pattern = marker_pattern(name)
        counts = {path: len(pattern.findall(new[path])) for path in fig.files}
        if any(n != 1 for n in counts.values()):
            for path, n in counts.items():
                if n != 1:
                    print(f"{name}: expected one marked block in "
                          f"{path.relative_to(ROOT)}, found {n}", file=sys.stderr)
            stale.append(name)
            continue
        t0 = time.perf_counter()
        body = render(fig)
        differs = False
        for path in fig.files:
            updated = pattern.sub(lambda m: m[1] + body + m[3], new[path])
            differs |= updated != new[path]
            new[path] = updated
        if differs:
            stale.append(name)
        print(f"{name} ({fig.kind}): {'differs' if differs else 'ok'}"
              f" [{time.perf_counter() - t0:.1f} s]", file=sys.stderr)
    if check:
        if stale:
            print("stale figures: " + ", ".join(stale), file=sys.stderr)
        return 1 if stale else 0
    for path, text in new.items():
        if text != texts[path]:
            path.write_text(text, encoding="utf-8")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a block differs from what the code gives")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=sorted(FIGURES))
    parser.add_argument("--fast", action="store_true", help="only the recomputed figures")
    parser.add_argument("--regenerate", action="store_true",
                        help="re-run the slow jobs (contdepth sweep/train, checkpoint) first")
    parser.add_argument("--list", action="store_true", help="list the figures")
    args = parser.parse_args(argv)
    names = args.only or [n for n, f in FIGURES.items() if not args.fast or f.kind == "fast"]
    if args.list:
        for n in names:
            files = " ".join(str(p.relative_to(ROOT)) for p in FIGURES[n].files)
            print(f"{n}\t{FIGURES[n].kind}\t{files}")
        return 0
    if args.regenerate:
        done = set()
        for n in names:
            regen = FIGURES[n].regenerate
            if regen is not None and regen not in done:
                print(f"regenerating {n} ...", file=sys.stderr)
                regen()
                done.add(regen)
    return apply(names, args.check)


if __name__ == "__main__":
    sys.exit(main())
