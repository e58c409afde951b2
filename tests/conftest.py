import os
import shutil
import tempfile

import jax
import jax.random as jr
import pytest


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
