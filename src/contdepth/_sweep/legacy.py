"""The original call `depth_sweep(field_or_model, y, horizon=..., baselines=...,
ode=...)`, translated into families: the field's Euler family (or the given momentum /
reversible model's family, in the `"euler"` slot) and the default baselines."""

import dataclasses
from typing import Any

import equinox as eqx
import jax.random as jr

from .._fields.protocol import check_field
from .._models.base import AbstractDepthModel
from .._models.euler import EulerResNet
from .._models.momentum import MomentumResNet
from .._models.neural_ode import NeuralODE
from .._models.reversible import ReversibleResNet
from .._validation import check_bool
from . import families as fam


class _UnitStep(eqx.Module):
    """`N -> family(N)` with the family's horizon set to `N` (step `h = 1`): the
    unscaled baseline of a family with a horizon."""

    family: Any  # a built-in family (a dataclass) with a `horizon` field

    def _at(self, num_steps: int):
        return dataclasses.replace(self.family, horizon=float(num_steps))

    def __call__(self, num_steps: int):
        return self._at(num_steps)(num_steps)

    @property
    def traced_depth(self):
        """The family's `traced_depth` at `h = 1`, where the family has one, else
        `None` (the sweep then compiles every depth)."""
        if not callable(getattr(self.family, "traced_depth", None)):
            return None
        return lambda num_steps: self._at(num_steps).traced_depth(num_steps)


# How a contdepth model given to the legacy call becomes its depth family: the model's
# own weights and settings at every depth. (The new API takes the family directly.)
_MODEL_FAMILIES = {
    EulerResNet: lambda m: fam.EulerFamily(m.field, m.horizon),
    NeuralODE: lambda m: fam.EulerFamily(m.field, m.horizon),
    MomentumResNet: lambda m: fam.MomentumFamily(m.field, m.horizon, m.gamma, m.memory),
    ReversibleResNet: lambda m: fam.ReversibleFamily(
        m.field_a, m.field_b, m.horizon, m.memory
    ),
}
_LABELS = {MomentumResNet: "momentum", ReversibleResNet: "reversible"}


def _main_family(field_or_model, horizon):
    """`(family, horizon, label, reference or None)` for the legacy first argument."""
    if isinstance(field_or_model, AbstractDepthModel):
        to_family = _MODEL_FAMILIES.get(type(field_or_model))
        if to_family is None:
            raise TypeError(
                "`field_or_model` must be a vector field, EulerResNet, NeuralODE, "
                "MomentumResNet or ReversibleResNet, got "
                f"{type(field_or_model).__name__}: to sweep another model pass a dict "
                "of depth families, e.g. `{'mine': lambda n: MyNet(n)}`."
            )
        family = to_family(field_or_model)
        if horizon is not None:
            family = dataclasses.replace(family, horizon=horizon)
        ode = field_or_model if isinstance(field_or_model, NeuralODE) else None
        label = _LABELS.get(type(field_or_model), "euler")
        return family, family.horizon, label, ode
    if not callable(field_or_model):
        raise TypeError(
            "`field_or_model` (legacy call) must be a vector field `f(t, y, args)` "
            "or a contdepth model, or pass `families` as a dict {name: N -> model}; "
            f"got {type(field_or_model).__name__}."
        )
    if horizon is None:
        raise ValueError(
            "`horizon` is required when `field_or_model` is a bare vector field, got "
            "horizon=None. Pass e.g. horizon=1.0."
        )
    family = fam.EulerFamily(check_field("field", field_or_model), horizon)
    return family, horizon, "euler", None


def legacy_families(field_or_model, *, horizon, baselines, vector_state, dim, key):
    """The families, horizon, model label and default reference of the legacy call.

    **Returns:**

    `(families, horizon, label, reference, note)`: `families` holds `"euler"` (the swept
    model's family) and, with `baselines`, `"unscaled"` and, for vector states,
    `"plain"`, `"branch_1/N"`, `"branch_1/sqrt(N)"` (weights from `key`'s 2nd and 3rd
    splits, as before); `reference` is the given NeuralODE or `None`; `note` says
    which baselines were left out.
    """
    baselines = check_bool("baselines", baselines)
    main, horizon, label, ode = _main_family(field_or_model, horizon)
    families = {"euler": main}
    if baselines:
        families["unscaled"] = _UnitStep(main)
        if vector_state:
            _, k_plain, k_branch, _ = jr.split(key, 4)
            families["plain"] = fam.plain(dim, k_plain)
            families["branch_1/N"] = fam.random_branches(dim, k_branch, "1/N")
            families["branch_1/sqrt(N)"] = fam.random_branches(
                dim, k_branch, "1/sqrt(N)"
            )
    note = (
        ""
        if vector_state or not baselines
        else ("plain and random-branch families need vector states")
    )
    return families, horizon, label, ode, note
