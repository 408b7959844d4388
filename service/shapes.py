"""Response shapes as JSON schemas: each shape is declared once, as a class with annotated fields,
and service/openapi.py derives its schema from the annotations (`schema_of`)."""

from __future__ import annotations

import types
import typing
from typing import Any, Union

# Field ranges too (not only digits), so that what matches is a time the service parses.
TIME_PATTERN = (
    r"^(?!0000)[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"[ T]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$"
)
TIME = {"type": "string", "pattern": TIME_PATTERN, "example": "2021-04-02 00:00:00"}
STATE = {"type": "string", "enum": ["recruiting", "upcoming", "sold_out", "finished", "closed"]}
_PLAIN = {int: "integer", str: "string", bool: "boolean", type(None): "null"}


def _field_schema(hint: Any) -> dict[str, Any]:
    if typing.get_origin(hint) is typing.Annotated:
        return dict(hint.__metadata__[0])  # the schema given with the type
    if typing.get_origin(hint) in (Union, types.UnionType):  # X | None
        return {"type": [_PLAIN[arg] for arg in typing.get_args(hint)]}
    return {"type": _PLAIN[hint]}


def schema_of(shape: type) -> dict[str, Any]:
    """The JSON schema of a shape class (NamedTuple, dataclass, TypedDict): an object with every
    field required, in declaration order; `Annotated[T, schema]` gives a field its own schema."""
    hints = typing.get_type_hints(shape, include_extras=True)
    properties = {name: _field_schema(hint) for name, hint in hints.items()}
    return {"type": "object", "properties": properties, "required": list(properties)}
