import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings


# XLA:CPU compile settings for the suite. About 80 % of its time is XLA compiling small
# programs (measured with `jax.monitoring`: 809 s of backend compile, 289 s of tracing
# and lowering, in 1376 s of test time), and two codegen settings cut the compile time
# about 2.5x: the classic elemental emitters instead of the new fusion emitters, and
# LLVM at -O1 instead of -O3. They change how XLA generates machine code, not what it
# computes: the same HLO, float rounding that may differ in the last bits. The suite
# runs at XLA's defaults with CONTDEPTH_TEST_XLA_DEFAULTS=1, and `make test-min` always
# does. Set once, by the first process (the xdist controller): workers, subprocesses
# and notebook kernels inherit the variable; an XLA_FLAGS of your own is kept and wins.
FAST_COMPILE_FLAGS = "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=1"


def _fast_compile_flags_apply() -> bool:
    """Whether this jaxlib accepts the flags and runs on CPU (an unknown flag in
    XLA_FLAGS aborts the process, so they are tried in a subprocess first)."""
    env = dict(os.environ, XLA_FLAGS=FAST_COMPILE_FLAGS)
    probe = "import jax; print(jax.default_backend())"
    try:
        proc = subprocess.run([sys.executable, "-c", probe], env=env, timeout=120,
                              capture_output=True, text=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and proc.stdout.strip().endswith("cpu")


if "CONTDEPTH_TEST_XLA_FLAGS" not in os.environ:
    _flags = ""
    if os.environ.get("CONTDEPTH_TEST_XLA_DEFAULTS") != "1":
        if _fast_compile_flags_apply():
            _flags = FAST_COMPILE_FLAGS
        else:
            warnings.warn("the suite runs at XLA's default compile settings: this "
                          "jaxlib or backend does not take " + FAST_COMPILE_FLAGS,
                          stacklevel=1)
    os.environ["CONTDEPTH_TEST_XLA_FLAGS"] = _flags
    os.environ["XLA_FLAGS"] = f"{_flags} {os.environ.get('XLA_FLAGS', '')}".strip()

import jax  # noqa: E402
import jax.random as jr  # noqa: E402
import pytest  # noqa: E402


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

# One persistent compilation cache per test session, empty at its start: the xdist
# workers, the subprocesses (CLI, resume-in-a-fresh-process) and the notebook kernels
# inherit the variables, so a program compiled by one of them is loaded, not
# recompiled, by the others. Only reuse: every assertion still runs.
_OWN_CACHE = "CONTDEPTH_TEST_JAX_CACHE" not in os.environ
if _OWN_CACHE:
    os.environ["CONTDEPTH_TEST_JAX_CACHE"] = tempfile.mkdtemp(prefix="contdepth-jax-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["CONTDEPTH_TEST_JAX_CACHE"]
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"
jax.config.update("jax_compilation_cache_dir", os.environ["CONTDEPTH_TEST_JAX_CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def _recorded_module_seconds() -> dict[str, float]:
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "results",
                        "test_suite.json")
    try:
        with open(path, encoding="utf-8") as f:
            return dict(json.load(f)["module_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def pytest_collection_modifyitems(config, items):
    """Slowest modules first, by the durations the last timed run recorded
    (`docs/results/test_suite.json`, written by `docs/readme_figures.py`).

    `make test` hands whole modules to the xdist workers in this order (`--dist loadfile
    --no-loadscope-reorder`): a module's fixtures and compiled programs are built once,
    and the longest jobs start first so that the two workers finish together. A module
    not yet timed counts as a slow one. The order within a module is kept."""
    seconds = _recorded_module_seconds()
    unknown = max(seconds.values(), default=0.0)

    def weight(item):
        return seconds.get(item.nodeid.split("::")[0], unknown)

    items.sort(key=lambda item: -weight(item))  # stable: each module's own order


def pytest_unconfigure(config):
    if _OWN_CACHE and not hasattr(config, "workerinput"):  # the xdist controller
        shutil.rmtree(os.environ["CONTDEPTH_TEST_JAX_CACHE"], ignore_errors=True)


@pytest.fixture
def getkey():
    """Fresh, deterministic PRNG keys: `getkey()` returns a new key on every call."""
    counter = iter(range(10**9))
    base = jr.PRNGKey(5678)
    return lambda: jr.fold_in(base, next(counter))


_CLEAR_ABOVE_BYTES = 4 * 2**30


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    except (OSError, ValueError, IndexError):  # not Linux: never clear
        return 0


@pytest.fixture(autouse=True, scope="module")
def _bounded_compile_caches():
    """Compiled programs accumulate in JAX's caches over hundreds of tests (a worker
    grows by about 2 GB in 5 minutes); past 4 GB resident, drop them between modules so
    that a long run stays far from the machine's memory (CI: 24 GiB for everything)."""
    yield
    if _resident_bytes() > _CLEAR_ABOVE_BYTES:
        jax.clear_caches()
