"""Losses and metrics for [`contdepth.train`][] and [`contdepth.make_train_step`][].

Each has the signature `f(model, inputs, targets) -> scalar` on a batch, the model a
single-sample callable that is `vmap`-ed over the leading axis. Write your own the
same way; a loss may also return `(scalar, aux)`.
"""

from ._train.loss import (
    accuracy as accuracy,
    cross_entropy as cross_entropy,
    mean_squared_error as mean_squared_error,
)
