"""Untied residual networks scaled by a power of depth,
`x_{k+1} = x_k + N^{-beta} f_{theta_k}(x_k)`, and their Neural ODE limit.

References: Sander, Ablin & Peyré 2022, "Do Residual Neural Networks discretize Neural
Ordinary Differential Equations?"; Marion, Wu, Sander & Biau 2024, "Implicit
regularization of deep residual networks towards neural ODEs" (ICLR); Cohen, Cont,
Rossier & Xu 2021, "Scaling properties of deep residual networks" (ICML).
"""

import functools
import math
from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Args, RealScalarLike, State, Vector
from .._fields._activation import activation_lipschitz
from .._fields.base import AbstractVectorField
from .._models.neural_ode import NeuralODE
from .._models.scaled import ScaledResidualNet
from .._stacking import index_module
from .._validation import (
    check_bool,
    check_callable,
    check_float_array,
    check_key,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
    check_state_shape,
)


class ResidualBranch(AbstractVectorField):
    """The residual branch of Marion et al. 2024: `f(t, y) = V act(W y + b) + c`,
    `d -> hidden -> d`, without biases by default. It ignores `t`; depth dependence
    comes from giving each layer its own weights.
    """

    W: Float[Array, "hidden dim"]
    V: Float[Array, "dim hidden"]
    b: Float[Array, " hidden"] | None
    c: Float[Array, " dim"] | None
    activation: Callable
    activation_lipschitz: float | None = eqx.field(static=True)

    def __init__(
        self,
        W: Float[Array, "hidden dim"],
        V: Float[Array, "dim hidden"],
        *,
        b: Float[Array, " hidden"] | None = None,
        c: Float[Array, " dim"] | None = None,
        activation: Callable = jax.nn.tanh,
        activation_lipschitz: float | None = None,
        stacked: bool = False,
    ):
        """**Arguments:**

        - `W`: the inner weight, shape `(hidden, dim)`.
        - `V`: the outer weight, shape `(dim, hidden)`.
        - `b`: optional inner bias `(hidden,)`; `c`: optional outer bias `(dim,)`.
        - `activation`: `jax.nn.tanh` (default), `jax.nn.relu` or any scalar function.
        - `activation_lipschitz`: `sup |activation'|`, needed by `lipschitz_bound` for
            activations contdepth does not know.
        - `stacked`: `True` to build `L` branches at once, every array with an extra
            leading axis of size `L` (for a `ScaledResidualNet` of `L` layers); such a
            stack is not itself a field.
        """
        lead = 1 if check_bool("stacked", stacked) else 0
        check_float_array("W", W, ndim=2 + lead)
        check_float_array("V", V, ndim=2 + lead)
        prefix = tuple(W.shape[:lead])
        hidden, dim = W.shape[lead:]
        if V.shape != (*prefix, dim, hidden):
            raise ValueError(
                f"`V` must have shape {(*prefix, dim, hidden)} to match `W` of shape "
                f"{tuple(W.shape)} ((hidden, dim) = {(hidden, dim)}), got "
                f"{tuple(V.shape)}."
            )
        what = f"ResidualBranch(dim={dim}, hidden={hidden})"
        if b is not None:
            check_float_array("b", b)
            check_state_shape("b", b, (*prefix, hidden), what)
        if c is not None:
            check_float_array("c", c)
            check_state_shape("c", c, (*prefix, dim), what)
        check_callable("activation", activation)
        if activation_lipschitz is not None:
            activation_lipschitz = check_nonnegative_float(
                "activation_lipschitz", activation_lipschitz
            )
        self.W, self.V, self.b, self.c = W, V, b, c
        self.activation = activation
        self.activation_lipschitz = activation_lipschitz

    @property
    def dim(self) -> int:
        return self.W.shape[-1]

    def __call__(self, t: RealScalarLike, y: Vector, args: Args = None) -> Vector:
        z = self.W @ y
        if self.b is not None:
            z = z + self.b
        out = self.V @ self.activation(z)
        if self.c is not None:
            out = out + self.c
        return out.astype(y.dtype)

    def check_state(self, y, name: str = "y") -> None:
        check_float_array(name, y)
        check_state_shape(name, y, (self.dim,), f"ResidualBranch(dim={self.dim})")

    def lipschitz_bound(self) -> Float[Array, ""]:
        """`||V||_2 ||W||_2 sup|act'|`."""
        lip = activation_lipschitz(self.activation, self.activation_lipschitz)
        return jnp.linalg.norm(self.V, ord=2) * jnp.linalg.norm(self.W, ord=2) * lip


_INITS = ("smooth", "tied", "iid", "interpolated")


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _draw_layer(key, k, dim: int, hidden: int, dtype):
    # Layer k's reference draw depends on (key, k) only; compiled once per shape.
    kw, kv = jr.split(jr.fold_in(key, k))
    W = jr.normal(kw, (hidden, dim), dtype) / math.sqrt(dim)
    V = jr.normal(kv, (dim, hidden), dtype) / math.sqrt(hidden)
    return W, V


def _draw_layers(key, n: int, dim: int, hidden: int, dtype):
    """Draws `k = 0, ..., n - 1`, stacked. Eagerly one compiled draw is reused for
    every depth (a random-number program is slow to compile); traced, one vmap."""
    if isinstance(key, jax.core.Tracer):
        return jax.vmap(lambda k: _draw_layer(key, k, dim, hidden, dtype))(
            jnp.arange(n)
        )
    draws = [_draw_layer(key, k, dim, hidden, dtype) for k in range(n)]
    return tuple(jnp.asarray(np.stack([d[i] for d in draws])) for i in range(2))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _arrange(init: str, n: int, W, V):
    """Layer weights from the reference draws `W, V` (stacked along a first axis)."""
    if init == "iid":
        return W, V
    if init == "interpolated":
        angle = (jnp.pi / 2) * jnp.arange(n, dtype=W.dtype) / n
        ca, sa = jnp.cos(angle)[:, None, None], jnp.sin(angle)[:, None, None]
        return ca * W[:1] + sa * W[1:2], ca * V[:1] + sa * V[1:2]
    if init == "smooth":
        V = jnp.zeros_like(V)
    return jnp.broadcast_to(W[:1], (n, *W.shape[1:])), jnp.broadcast_to(
        V[:1], (n, *V.shape[1:])
    )


def untied_resnet(
    key: PRNGKeyArray,
    *,
    dim: int,
    hidden: int,
    num_layers: int,
    beta: float = 1.0,
    init: Literal["smooth", "tied", "iid", "interpolated"] = "smooth",
    activation: Callable = jax.nn.tanh,
    bias: bool = False,
) -> ScaledResidualNet:
    """An untied ResNet `x_{k+1} = x_k + N^{-beta} V_k act(W_k x_k)` of `N` layers, as a
    [`contdepth.ScaledResidualNet`][] of [`contdepth.ResidualBranch`][]es with
    `alpha = N^{-beta}`.

    `beta = 1` is the Neural ODE scaling (Sander et al. 2022; Marion et al. 2024);
    `beta = 1/2` the scaling of i.i.d. initialisations (Cohen et al. 2021).

    Initialisations, from reference draws `theta^(j) = (W^(j), V^(j))`,
    `W ~ N(0, 1/dim)`, `V ~ N(0, 1/hidden)` entrywise, draw `j` from
    `jax.random.fold_in(key, j)`:

    - `"smooth"`: Marion et al. 2024's: `V_k = 0` and `W_k = W^(0)` for all layers.
        The network is the identity at initialisation and the weights are (trivially)
        a smooth function of depth; Marion et al. show gradient flow keeps them so.
    - `"tied"`: `theta_k = theta^(0)` for all layers (a weight-tied ResNet: a
        constant function of depth).
    - `"iid"`: `theta_k = theta^(k)`, independent layers (the standard
        initialisation; the weights are not a function of depth in the limit, Cohen
        et al. 2021). Nets of depths `N < N'` from one key share their first `N`
        layers.
    - `"interpolated"`: `theta_k = cos(pi t_k / 2) theta^(0) + sin(pi t_k / 2)
        theta^(1)`, `t_k = k / N`: every layer has
        the distribution of an i.i.d. layer, but the weights are a smooth (C^inf)
        function of depth, so refined and ODE versions converge at rate `O(1/N)`.

    **Arguments:**

    - `key`: a `jax.random.PRNGKey`.
    - `dim`, `hidden`: state and hidden sizes.
    - `num_layers`: depth `N >= 1`.
    - `beta`: the depth exponent `> 0` of the residual scale `N^{-beta}`.
    - `init`: one of the above.
    - `activation`: `jax.nn.tanh` (default) or `jax.nn.relu`, or any known activation.
    - `bias`: whether the branches carry biases `b, c` (initialised to zero).

    **Returns:**

    A `ScaledResidualNet` mapping `(dim,)` to `(dim,)`.
    """
    check_key("key", key)
    dim = check_positive_int("dim", dim)
    hidden = check_positive_int("hidden", hidden)
    n = check_positive_int("num_layers", num_layers)
    beta = check_positive_float("beta", beta)
    bias = check_bool("bias", bias)
    if init not in _INITS:
        raise ValueError(f"`init` must be one of {_INITS}, got {init!r}.")
    dtype = jnp.result_type(float)
    draws = {"iid": n, "interpolated": 2}.get(init, 1)
    Ws, Vs = _arrange(init, n, *_draw_layers(key, draws, dim, hidden, dtype))
    zeros_b = jnp.zeros((n, hidden), dtype) if bias else None
    zeros_c = jnp.zeros((n, dim), dtype) if bias else None
    stacked = ResidualBranch(
        Ws, Vs, b=zeros_b, c=zeros_c, activation=activation, stacked=True
    )
    return stacked_resnet(stacked, n, n ** (-beta))


def stacked_resnet(stacked, num_layers: int, alpha) -> ScaledResidualNet:
    """`ScaledResidualNet(fields, num_layers, alpha=alpha)` from fields already stacked
    along a first axis (no unstacking and restacking: cheap for large depths, and
    traceable under `jit`). `alpha` may be a traced scalar."""
    # Only shapes are needed from the constructor (its checks run on them): no
    # unstacking, restacking or compilation.
    skeleton = eqx.filter_eval_shape(
        lambda s: ScaledResidualNet(
            [index_module(s, 0)] * num_layers, num_layers, alpha=1.0
        ),
        stacked,
    )
    return eqx.tree_at(
        lambda m: (m.fields, m.alpha), skeleton, (stacked, jnp.asarray(alpha))
    )


def interpolate_layers(
    stacked, s: Float[Array, ""], num_layers: int, interpolation: str
):
    """The layer at fractional layer index `s` of `num_layers` stacked layers:
    `"piecewise"` takes layer `floor(s)`; `"linear"` interpolates the floating leaves
    between layers `floor(s)` and `floor(s) + 1`. Both are clamped to
    `[0, num_layers - 1]` (constant beyond the last layer)."""
    s = jnp.asarray(s)
    # A few ulps of slack so that s = i lands on layer i despite rounding in t N / T.
    eps = 100 * float(jnp.finfo(s.dtype).eps) * num_layers
    i0 = jnp.clip(jnp.floor(s + eps).astype(jnp.int32), 0, num_layers - 1)
    if interpolation == "piecewise":
        return index_module(stacked, i0)
    i1 = jnp.minimum(i0 + 1, num_layers - 1)
    w = jnp.clip(s - i0, 0.0, 1.0)
    dyn, rest = eqx.partition(stacked, eqx.is_inexact_array)
    # a + w (b - a), so that w = 0 returns a exactly.
    mixed = jax.tree.map(lambda a: a[i0] + w.astype(a.dtype) * (a[i1] - a[i0]), dyn)
    return eqx.combine(mixed, index_module(rest, i0))


class DepthInterpolatedField(AbstractVectorField):
    """`F(t, y, args) = scale * f_{theta(t)}(t, y, args)` where `theta(t)` interpolates
    `N` stacked layer weights placed at `t_k = k T / N`: piecewise constant (layer `k`
    on `[t_k, t_{k+1})`) or linear between the nodes (constant after `t_{N-1}`).

    The continuous-depth counterpart of an untied ResNet (Sander et al. 2022); its
    Euler scheme on the grid `t_k` is the ResNet.
    """

    layers: Callable
    num_layers: int = eqx.field(static=True)
    horizon: float = eqx.field(static=True)
    interpolation: str = eqx.field(static=True)
    scale: float = eqx.field(static=True)

    def __init__(
        self,
        layers,
        num_layers: int,
        horizon: float,
        *,
        interpolation: Literal["piecewise", "linear"] = "linear",
        scale: float = 1.0,
    ):
        """**Arguments:**

        - `layers`: a field whose array leaves are stacked along a first axis of size
            `num_layers` (e.g. `ScaledResidualNet.fields` of an untied net).
        - `num_layers`: `N`.
        - `horizon`: `T > 0`.
        - `interpolation`: `"piecewise"` or `"linear"`.
        - `scale`: a constant factor on the field.
        """
        self.layers = layers
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.horizon = check_positive_float("horizon", horizon)
        self.interpolation = _check_interpolation(interpolation)
        self.scale = check_positive_float("scale", scale)

    def __call__(self, t: RealScalarLike, y: State, args: Args = None) -> State:
        s = jnp.asarray(t, y.dtype) * (self.num_layers / self.horizon)
        layer = interpolate_layers(self.layers, s, self.num_layers, self.interpolation)
        return (self.scale * layer(t, y, args)).astype(y.dtype)

    def jump_times(self, dtype=jnp.float32) -> tuple[float, ...]:
        if self.interpolation == "linear":
            return ()
        eps = 100 * float(jnp.finfo(dtype).eps) * self.num_layers
        h = self.horizon / self.num_layers
        return tuple((i - eps) * h for i in range(1, self.num_layers))

    def check_state(self, y, name: str = "y") -> None:
        own = getattr(index_module(self.layers, 0), "check_state", None)
        if callable(own):
            own(y, name)


def _check_interpolation(interpolation) -> Literal["piecewise", "linear"]:
    if interpolation not in ("piecewise", "linear"):
        raise ValueError(
            f"`interpolation` must be 'piecewise' or 'linear', got {interpolation!r}."
        )
    return interpolation


def check_untied(name: str, net) -> ScaledResidualNet:
    """`net` must be a `ScaledResidualNet` with an undamped skip (`beta = 0`)."""
    if not isinstance(net, ScaledResidualNet):
        raise TypeError(
            f"`{name}` must be a cd.ScaledResidualNet `x + alpha f_k(x)` (e.g. from "
            f"`untied_resnet`), got {type(net).__name__}."
        )
    if net.beta != 0.0:
        raise ValueError(
            f"`{name}` has a damped skip ((1 - beta) x with ScaledResidualNet "
            f"beta={net.beta}); only x_(k+1) = x_k + alpha f_k(x_k) (beta=0) is a "
            "forward-Euler step of an ODE."
        )
    return net


def as_neural_ode(
    net: ScaledResidualNet,
    horizon: float = 1.0,
    *,
    interpolation: Literal["piecewise", "linear"] = "linear",
    **diffrax_options,
) -> NeuralODE:
    """The Neural ODE whose forward-Euler scheme on `N` steps is the untied ResNet
    `x_{k+1} = x_k + (1/N) f_k(x_k)` (depth exponent `beta = 1`):
    `dx/dt = (1/T) f_{theta(t)}(x)` on `[0, T]`, `theta(t_k) = theta_k` at
    `t_k = k T / N`, interpolated piecewise-constantly or linearly in depth.

    For weights `theta_k = theta(k/N)` sampled from a smooth function, the ResNet and
    this ODE agree to `O(1/N)` (Sander et al. 2022).

    **Arguments:**

    - `net`: a `ScaledResidualNet` with skip damping 0 and `alpha = 1/N`, e.g.
        `untied_resnet(..., beta=1.0)`.
    - `horizon`: `T > 0` (the ODE time is `t = T k / N` at layer `k`).
    - `interpolation`: `"linear"` (a continuous `theta(t)`) or `"piecewise"` (the
        `PiecewiseField` view: layer `k` on `[t_k, t_{k+1})`).
    - `diffrax_options`: forwarded to [`contdepth.NeuralODE`][] (`solver`, `rtol`,
        `atol`, `adjoint`, ...).

    **Returns:**

    A [`contdepth.NeuralODE`][].
    """
    net = check_untied("net", net)
    horizon = check_positive_float("horizon", horizon)
    interpolation = _check_interpolation(interpolation)
    n = net.num_layers
    alpha = float(net.alpha)
    if not math.isclose(alpha * n, 1.0, rel_tol=1e-6):
        beta = -math.log(alpha) / math.log(n) if n > 1 and alpha > 0 else float("nan")
        raise ValueError(
            f"`as_neural_ode` needs the ODE scaling alpha = 1/N, got alpha={alpha} "
            f"with N={n} (depth exponent beta={beta:.4g}). For beta != 1 the residual "
            "N^-beta f is N^(1-beta) times the Euler step (1/N) f: as N grows that "
            "factor diverges (beta < 1) or vanishes (beta > 1, the identity map), so "
            "no fixed ODE is approached. Build the net with beta=1."
        )
    layers = net.fields
    if net.tied:
        layers = jax.tree.map(lambda a: a[None], eqx.filter(layers, eqx.is_array))
        layers = eqx.combine(layers, net.fields)
        n_nodes = 1
    else:
        n_nodes = n
    field = DepthInterpolatedField(
        layers, n_nodes, horizon, interpolation=interpolation, scale=1.0 / horizon
    )
    return NeuralODE(field, horizon, **diffrax_options)
