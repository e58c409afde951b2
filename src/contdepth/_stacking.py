"""Stacking identically-structured modules along a leading axis.

Depth-varying weights are stored stacked so that a `lax.scan` or a dynamic index picks
one layer: compile time and call cost do not grow with the number of layers.
"""

import equinox as eqx
import jax
import jax.numpy as jnp


def stack_modules(modules, name: str):
    """Stack identically-structured modules into one module with a leading axis."""
    dyn0, static0 = eqx.partition(modules[0], eqx.is_array)
    dyns = []
    for i, m in enumerate(modules):
        if m is modules[0]:  # repeated template: nothing to check (fast for large N)
            dyns.append(dyn0)
            continue
        dyn, static = eqx.partition(m, eqx.is_array)
        if static != static0 or jax.tree.map(jnp.shape, dyn) != jax.tree.map(
            jnp.shape, dyn0
        ):
            raise ValueError(
                f"`{name}[{i}]` differs in structure from `{name}[0]`: all must be the "
                "same class with the same hyper-parameters and weight shapes."
            )
        dyns.append(dyn)
    return eqx.combine(jax.tree.map(lambda *xs: jnp.stack(xs), *dyns), static0)


def index_module(stacked, i):
    dyn, static = eqx.partition(stacked, eqx.is_array)
    return eqx.combine(jax.tree.map(lambda a: a[i], dyn), static)
