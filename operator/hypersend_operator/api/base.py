"""Shared pieces of the HypersendCluster API: base model, CEL rules, Kubernetes scalar types.

A `Rule` is written once and used twice: as a CEL `x-kubernetes-validations` entry in the generated
CRD (the API server enforces it) and, when it has a Python mirror, as a pydantic validator (so unit
tests and the operator see the same message for the same mistake).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

# Kubernetes resource.Quantity, as the API server's own OpenAPI spells it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


@dataclass(frozen=True)
class Rule:
    """One validation rule: CEL for the API server, optionally a Python mirror of it.

    `check` is None for transition rules (they compare with `oldSelf`, which only the API server
    has) and for rules mirrored by a field validator with a more specific message.
    """

    cel: str
    message: str
    check: Callable[[Any], bool] | None = None

    def as_cel(self) -> dict[str, Any]:
        return {"rule": self.cel, "message": self.message}


def _add_rules(schema: dict[str, Any], cls: type[Any]) -> None:
    rules: tuple[Rule, ...] = getattr(cls, "rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [r.as_cel() for r in rules]


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, snake_case in Python, no unknown fields."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
        json_schema_extra=_add_rules,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in type(self).rules:
            if rule.check is not None and not rule.check(self):
                raise ValueError(rule.message)
        return self


def _quantity_to_str(value: Any) -> Any:
    # YAML `cpu: 1` arrives as an int; keep one Python type (str) for the builders.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


# A resource quantity ("500m", "1Gi", 2). Serialised as int-or-string in the CRD, a str in Python.
Quantity = Annotated[
    str,
    BeforeValidator(_quantity_to_str),
    StringConstraints(max_length=64, pattern=QUANTITY_PATTERN),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "maxLength": 64,
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]

# An IntOrString such as a PDB's maxUnavailable (1 or "25%").
IntOrPercent = Annotated[
    Annotated[int, Strict(), Field(ge=0)]
    | Annotated[str, StringConstraints(pattern=r"^[0-9]{1,3}%$")],
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": r"^[0-9]{1,3}%$",
            "x-kubernetes-int-or-string": True,
        }
    ),
]


class SecretKeyRef(ApiModel):
    """A key of a Secret in the cluster's namespace."""

    name: Annotated[
        str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    ] = Field(description="Name of the Secret, in the HypersendCluster's namespace.")
    key: Annotated[
        str, StringConstraints(min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN)
    ] = Field(description="Key in the Secret's data.")
