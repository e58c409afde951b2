import jax
import jax.random as jr
import pytest


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


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
