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
