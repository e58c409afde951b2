"""Run by tests/test_distributed.py in a subprocess with 4 forced host devices (the
device count must be fixed before JAX starts). Prints one JSON line of findings."""

import json
import os
import sys


os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402


jax.config.update("jax_enable_x64", True)

import contdepth as cd  # noqa: E402


def max_param_diff(a, b):
    la = jax.tree.leaves(eqx.filter(a, eqx.is_inexact_array))
    lb = jax.tree.leaves(eqx.filter(b, eqx.is_inexact_array))
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(la, lb))


def train_checks(out, mesh):
    train_data, _ = cd.datasets.two_moons(256, 0.1, key=jr.PRNGKey(0))
    train_data = (train_data[0].astype(jnp.float64), train_data[1])
    model = cd.make_classifier(
        "euler", num_features=2, num_classes=2, dim=8, width=16, depth=4,
        key=jr.PRNGKey(1),
    )
    model = jax.tree.map(
        lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, model
    )
    kwargs = dict(steps=6, batch_size=64, key=jr.PRNGKey(2), optimizer=optax.sgd(0.1),
                  progress=False)
    single, h1 = cd.train(model, train_data, **kwargs)
    sharded, h2 = cd.train(model, train_data, mesh=mesh, **kwargs)
    out["param_diff"] = max_param_diff(single, sharded)
    out["loss_diff"] = float(np.max(np.abs(np.asarray(h1["loss"]) - np.asarray(h2["loss"]))))
    leaf = jax.tree.leaves(eqx.filter(sharded, eqx.is_inexact_array))[0]
    out["param_sharding"] = str(leaf.sharding)
    auto, _ = cd.train(model, train_data, mesh="auto", **kwargs)
    out["auto_param_diff"] = max_param_diff(single, auto)
    try:
        cd.train(model, train_data, mesh=mesh, **{**kwargs, "batch_size": 66})
        out["indivisible_error"] = None
    except ValueError as e:
        out["indivisible_error"] = str(e)

    # A custom loss on pytree inputs and float targets, with validation.
    x, labels = train_data
    inputs, targets = {"x": x, "w": jnp.ones(x.shape[0])}, jax.nn.one_hot(labels, 2)

    def loss(m, a, b):
        return jnp.mean(a["w"][:, None] * jnp.square(jax.vmap(m)(a["x"]) - b))

    custom = dict(kwargs, loss_fn=loss, validation_data=(inputs, targets), eval_every=3)
    single, h1 = cd.train(model, (inputs, targets), **custom)
    sharded, h2 = cd.train(model, (inputs, targets), mesh=mesh, **custom)
    out["custom_param_diff"] = max_param_diff(single, sharded)
    out["custom_val_diff"] = float(np.max(np.abs(
        h1["validation"]["loss"] - h2["validation"]["loss"])))



def sweep_checks(out, mesh):
    xs = cd.shard_batch(jnp.ones((8, 3)), mesh)
    out["batch_sharding_spec"] = list(xs.sharding.spec)
    out["batch_devices"] = len(xs.sharding.device_set)
    out["shard_shapes"] = sorted({tuple(s.data.shape) for s in xs.addressable_shards})

    field = cd.MLPField(4, 8, 1, key=jr.PRNGKey(3))
    ys = jr.normal(jr.PRNGKey(4), (8, 4))
    sweep_kwargs = dict(horizon=1.0, steps=(2, 16), batched=True, progress=False)
    a = cd.depth_sweep(field, ys, **sweep_kwargs)
    b = cd.depth_sweep(field, ys, mesh=mesh, **sweep_kwargs)
    # Relative differences, in units of what float64 can resolve: an SVD fixes sigma_min
    # only to ~eps * sigma_max, so tiny singular values carry a tolerance scaled by cond.
    worst = 0.0
    for fam, cols in a.families.items():
        resolution = 1e-10 * np.maximum(1.0, cols["cond"])
        for c, v in cols.items():
            rel = np.abs(v - b.families[fam][c]) / np.maximum(np.abs(v), 1e-300)
            worst = max(worst, float(np.max(rel / resolution)))
    out["sweep_rel_diff_in_resolution_units"] = worst
    out["sweep_tables_equal"] = a.to_markdown() == b.to_markdown()
    out["sweep_devices"] = b.meta["devices"]
    model_e = cd.EulerResNet(field, 4, 1.0)
    jac = jax.jit(jax.vmap(lambda y: cd.jacobian(model_e, y)))(cd.shard_batch(ys, mesh))
    out["jacobian_devices"] = len(jac.sharding.device_set)
    ref = jax.vmap(lambda y: cd.jacobian(model_e, y))(ys)
    out["jacobian_diff"] = float(jnp.max(jnp.abs(jac - ref)))


def main():
    # Training (collectives) and the sweep run in separate processes: XLA:CPU's forced
    # host devices share a small thread pool, and a program started right after a
    # collective-heavy one has been seen to stall on a 2-core machine.
    out = {"num_devices": len(jax.devices())}
    mesh = cd.make_mesh()
    {"train": train_checks, "sweep": sweep_checks}[sys.argv[1]](out, mesh)
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
