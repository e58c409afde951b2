"""PyTorch twins of the contdepth models, with the JAX weights copied across.

Imported only when torch is installed.
"""

import numpy as np
import torch

from . import _common as c


class TorchMLPField(torch.nn.Module):
    """`F(t, y) = W_D tanh(... tanh(W_1 y + b_1) ...) + b_D`, the same function as a
    (time-independent, tanh) `cd.MLPField`, with its float32 weights copied."""

    def __init__(self, field):
        super().__init__()
        if field.time_dependent:
            raise ValueError("the PyTorch twin supports time-independent fields only")
        self.layers = torch.nn.ModuleList()
        for layer in field.mlp.layers:
            out_f, in_f = layer.weight.shape
            lin = torch.nn.Linear(in_f, out_f, device=c.torch_device())
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.array(layer.weight)))
                lin.bias.copy_(torch.from_numpy(np.array(layer.bias)))
            self.layers.append(lin)

    def forward(self, t, y):  # torchdiffeq's signature
        for lin in self.layers[:-1]:
            y = torch.tanh(lin(y))
        return self.layers[-1](y)


def euler_loop(field, y, num_steps: int, horizon: float):
    """The PyTorch eager Euler ResNet: `y <- y + h F(t_k, y)`, a Python loop."""
    h = horizon / num_steps
    for k in range(num_steps):
        y = y + h * field(k * h, y)
    return y


def grads_of(module) -> list:
    return [p.grad for p in module.parameters()]


def zero_grad(module) -> None:
    for p in module.parameters():
        p.grad = None


def jax_grads_like_torch(field_grads) -> list:
    """The gradient of a `cd.MLPField` as a flat list ordered like
    `TorchMLPField.parameters()` (weight, bias per layer)."""
    out = []
    for layer in field_grads.mlp.layers:
        out += [np.asarray(layer.weight), np.asarray(layer.bias)]
    return out
