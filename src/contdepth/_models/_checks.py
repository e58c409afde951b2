from .._fields.base import AbstractVectorField


def check_field(name: str, field) -> AbstractVectorField:
    if not isinstance(field, AbstractVectorField):
        raise TypeError(
            f"`{name}` must be a contdepth vector field (a subclass of "
            f"`cd.AbstractVectorField`, e.g. `cd.MLPField`), got {type(field).__name__}."
        )
    return field
