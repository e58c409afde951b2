"""Device meshes for data parallelism: JAX's own `jax.sharding`, nothing home-made."""

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .._validation import check_positive_int


#: The mesh axis over which batches (and batches of states) are split.
DATA_AXIS = "data"


def make_mesh(
    num_devices: int | None = None,
    *,
    # `jax.Device` is re-exported from compiled jaxlib, which ships no type stubs.
    devices: Sequence[jax.Device] | None = None,  # pyright: ignore[reportInvalidTypeForm]
    axis_name: str = DATA_AXIS,
) -> Mesh:
    """A one-axis device mesh for data parallelism.

    After `jax.distributed.initialize()` on every host, `jax.devices()` lists the
    devices of *all* hosts, so the default mesh spans the whole job.

    **Arguments:**

    - `num_devices`: how many devices to use (the first ones of `devices`); default all.
    - `devices`: the devices to choose from; default `jax.devices()`.
    - `axis_name`: the mesh axis name; contdepth shards batches over `"data"`.

    **Returns:**

    A `jax.sharding.Mesh` of shape `(num_devices,)`.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("`devices` must hold at least one device, got an empty list.")
    if num_devices is None:
        num_devices = len(devices)
    num_devices = check_positive_int("num_devices", num_devices)
    if num_devices > len(devices):
        raise ValueError(
            f"`num_devices` must be <= the {len(devices)} available devices, got "
            f"num_devices={num_devices}. On CPU, more host devices can be forced with "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N (set before importing "
            "jax)."
        )
    if not isinstance(axis_name, str) or not axis_name:
        raise TypeError(f"`axis_name` must be a non-empty str, got {axis_name!r}.")
    return Mesh(np.asarray(devices[:num_devices]), (axis_name,))


def resolve_mesh(mesh, name: str = "mesh") -> Mesh | None:
    """`None` (single device), `"auto"` (all devices) or a one-axis `Mesh`."""
    if mesh is None:
        return None
    if isinstance(mesh, str):
        if mesh != "auto":
            raise ValueError(
                f'`{name}` must be None, "auto" or a jax.sharding.Mesh, got {mesh!r}.'
            )
        return make_mesh()
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f'`{name}` must be None, "auto" or a jax.sharding.Mesh, got '
            f"{type(mesh).__name__}."
        )
    if len(mesh.axis_names) != 1:
        raise ValueError(
            f"`{name}` must have exactly one axis (data parallelism), got axes "
            f"{mesh.axis_names}. Build one with `cd.make_mesh()`."
        )
    return mesh


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Split the leading (batch) axis over the mesh; replicate the rest."""
    return NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_divisible(name: str, size: int, mesh: Mesh) -> None:
    """A batch must split evenly: contdepth never drops or pads samples silently."""
    n = mesh.devices.size
    if size % n != 0:
        raise ValueError(
            f"`{name}` must be divisible by the number of devices in the mesh ({n}) to "
            f"be split evenly, got {name}={size}. Use a multiple of {n} (e.g. "
            f"{max(n, size - size % n)} or {size + n - size % n}); contdepth never "
            "drops or pads samples silently."
        )


def shard_batch(x, mesh: Mesh | str, *, name: str = "x"):
    """Place a batch (an array or a PyTree of arrays with a common leading axis) on
    `mesh`, split along the leading axis over the data axis.

    Any jitted/vmapped computation on the result (e.g.
    `jax.vmap(lambda y: cd.jacobian(model, y))`) then runs sharded, one slice of the
    batch per device, and XLA inserts whatever communication is needed.

    **Arguments:**

    - `x`: the batch; its leading size must be divisible by the number of devices.
    - `mesh`: a one-axis `Mesh` (see [`contdepth.make_mesh`][]) or `"auto"`.
    - `name`: the argument name used in error messages.

    **Returns:**

    `x` as sharded `jax.Array`s (inspect `.sharding`).
    """
    resolved = resolve_mesh(mesh)
    if resolved is None:
        raise TypeError(
            '`mesh` must be "auto" or a jax.sharding.Mesh to shard over, got None.'
        )
    leaves = jax.tree.leaves(x)
    if not leaves:
        raise ValueError(f"`{name}` must hold at least one array, got {x!r}.")
    for leaf in leaves:
        if np.ndim(leaf) < 1:
            raise ValueError(f"`{name}` must have a leading batch axis, got a scalar.")
        check_divisible(f"{name}.shape[0]", np.shape(leaf)[0], resolved)
    return jax.device_put(x, batch_sharding(resolved))
