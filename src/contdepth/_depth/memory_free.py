"""Backpropagation through an untied ResNet without storing its activations
(Sander, Ablin & Peyré 2022, Section 5)."""

from typing import Literal

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp

from .._custom_types import Args, State
from .._fields.protocol import ARGS_UNKNOWN
from .._models.base import AbstractDepthModel
from .._models.scaled import ScaledResidualNet
from .untied import check_untied


_RECONSTRUCTIONS = ("euler", "heun", "corrected")


def _reconstruct(kind: str, f, h, y_next):
    """An approximate inverse of the step `y_next = y + h f(y)`."""
    f_next = f(y_next)
    guess = y_next - h * f_next  # O(h^2) per step
    if kind == "euler":
        return guess
    if kind == "heun":
        # Trapezoid (Heun) step of the reversed ODE dy/dt = -f(y).
        return y_next - 0.5 * h * (f_next + f(guess))
    # One fixed-point sweep of y = y_next - h f(y): O(h^3) per step.
    return y_next - h * f(guess)


def _index(tree, k):
    return jax.tree.map(lambda a: a[k], tree)


def _layer(fields_dyn, static, tied: bool, k):
    return eqx.combine(fields_dyn if tied else _index(fields_dyn, k), static)


def _step(layer, alpha, k, y, args):
    t = k.astype(y.dtype)
    return y + alpha.astype(y.dtype) * layer(t, y, args)


@eqx.filter_custom_vjp
def _memory_free(vjp_arg, static, args, tied, num_layers, reconstruction):
    fields_dyn, alpha, y = vjp_arg

    def body(y, k):
        return _step(_layer(fields_dyn, static, tied, k), alpha, k, y, args), None

    y_out, _ = lax.scan(body, y, jnp.arange(num_layers))
    return y_out


@_memory_free.def_fwd
def _memory_free_fwd(
    perturbed, vjp_arg, static, args, tied, num_layers, reconstruction
):
    y_out = _memory_free(vjp_arg, static, args, tied, num_layers, reconstruction)
    return y_out, y_out  # the only residual: the output


@_memory_free.def_bwd
def _memory_free_bwd(
    y_out, g_out, perturbed, vjp_arg, static, args, tied, num_layers, reconstruction
):
    fields_dyn, alpha, _ = vjp_arg  # the input y is not used: it is reconstructed

    def grads_at(layer_dyn, alpha, k, y, g):
        def step(layer_dyn, alpha, y):
            return _step(eqx.combine(layer_dyn, static), alpha, k, y, args)

        _, vjp = jax.vjp(step, layer_dyn, alpha, y)
        return vjp(g)

    def body(carry, k):
        y_next, g_y, g_alpha, g_tied = carry
        layer_dyn = fields_dyn if tied else _index(fields_dyn, k)
        layer = eqx.combine(layer_dyn, static)
        t = k.astype(y_next.dtype)
        h = alpha.astype(y_next.dtype)
        y = _reconstruct(reconstruction, lambda z: layer(t, z, args), h, y_next)
        g_layer, g_a, g_y = grads_at(layer_dyn, alpha, k, y, g_y)
        if tied:
            g_tied = jax.tree.map(jnp.add, g_tied, g_layer)
            return (y, g_y, g_alpha + g_a, g_tied), None
        return (y, g_y, g_alpha + g_a, g_tied), g_layer

    zeros_tied = jax.tree.map(jnp.zeros_like, fields_dyn) if tied else None
    init = (y_out, g_out, jnp.zeros_like(alpha), zeros_tied)
    (_, g_y, g_alpha, g_tied), g_stacked = lax.scan(
        body, init, jnp.arange(num_layers), reverse=True
    )
    g_fields = g_tied if tied else g_stacked
    return g_fields, g_alpha, g_y


def memory_free_apply(
    net: ScaledResidualNet,
    y: State,
    args: Args = None,
    *,
    reconstruction: Literal["euler", "heun", "corrected"] = "euler",
) -> State:
    """`net(y, args)` for `net: x_{k+1} = x_k + h f_k(x_k)` (`h = net.alpha`), with a
    memory-free backward pass: the forward pass keeps only the output, and the
    backward sweep reconstructs each `x_k` from `x_{k+1}` by integrating the ODE
    backwards (Sander et al. 2022), then backpropagates through step `k` at the
    reconstructed state. Gradients flow to `y`, to the fields' weights and to `alpha`
    (not to `args`, held constant). Memory is `O(1)` in depth instead of `O(N)`; the
    price is a gradient error that vanishes with `h` when the weights are a smooth
    function of depth.

    Reconstructions of `x_k` from `x_{k+1}`:

    - `"euler"`: `x_{k+1} - h f_k(x_{k+1})`, one field evaluation, local error
        `O(h^2)`: gradient error `O(h) = O(1/N)`.
    - `"heun"`: the trapezoid (Heun) step of the reversed ODE,
        `x_{k+1} - (h/2)(f_k(x_{k+1}) + f_k(x~))` with `x~` the Euler guess. Second
        order for the ODE, but as an inverse of the forward-*Euler* step its local
        error is still `O(h^2)` (half Euler's constant): gradient error `O(1/N)`, about
        halved.
    - `"corrected"`: `x_{k+1} - h f_k(x~)`, one fixed-point sweep of the exact inverse
        `x_k = x_{k+1} - h f_k(x_k)`: local error `O(h^3)`, gradient error `O(1/N^2)`.
        Two field evaluations, like `"heun"`.

    **Arguments:**

    - `net`: a `ScaledResidualNet` with skip damping 0 (e.g. from `untied_resnet`).
    - `y`: one input state.
    - `args`: forwarded to the fields.
    - `reconstruction`: `"euler"`, `"heun"` or `"corrected"`.

    **Returns:**

    `net(y, args)`, with the memory-free vector-Jacobian product.
    """
    net = check_untied("net", net)
    if reconstruction not in _RECONSTRUCTIONS:
        raise ValueError(
            f"`reconstruction` must be one of {_RECONSTRUCTIONS}, got "
            f"{reconstruction!r}."
        )
    net.check_state(y, args=args)
    fields_dyn, static = eqx.partition(net.fields, eqx.is_inexact_array)
    return _memory_free(
        (fields_dyn, net.alpha, y),
        static,
        args,
        net.tied,
        net.num_layers,
        reconstruction,
    )


class MemoryFree(AbstractDepthModel):
    """An untied ResNet `x_{k+1} = x_k + h f_k(x_k)` whose backward pass stores no
    activations, reconstructing them backwards instead (see
    [`contdepth.memory_free_apply`][]). A depth model like any other: `jax.grad`
    through it gives approximate gradients for `y`, the weights and `alpha`.

    Reference: Sander, Ablin & Peyré 2022, "Do Residual Neural Networks discretize
    Neural Ordinary Differential Equations?", Section 5.
    """

    net: ScaledResidualNet
    reconstruction: Literal["euler", "heun", "corrected"] = eqx.field(static=True)

    def __init__(
        self,
        net: ScaledResidualNet,
        *,
        reconstruction: Literal["euler", "heun", "corrected"] = "euler",
    ):
        """**Arguments:**

        - `net`: a `ScaledResidualNet` with skip damping 0.
        - `reconstruction`: `"euler"`, `"heun"` or `"corrected"`.
        """
        self.net = check_untied("net", net)
        if reconstruction not in _RECONSTRUCTIONS:
            raise ValueError(
                f"`reconstruction` must be one of {_RECONSTRUCTIONS}, got "
                f"{reconstruction!r}."
            )
        self.reconstruction = reconstruction

    @property
    def num_layers(self) -> int:
        return self.net.num_layers

    def layer_parameters(self):
        from .regularity import layer_parameters

        return layer_parameters(self.net)

    def __call__(self, y: State, args: Args = None) -> State:
        return memory_free_apply(self.net, y, args, reconstruction=self.reconstruction)

    def check_state(self, y: State, name: str = "y", args: Args = ARGS_UNKNOWN) -> None:
        self.net.check_state(y, name, args)
