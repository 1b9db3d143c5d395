"""Generate the HypersendCluster CRD from the pydantic models (the one source of truth).

    python -m hypersend_operator.crd           # (re)write crds/hypersend.io_hypersendclusters.yaml
    python -m hypersend_operator.crd --check   # exit 1 if the committed file differs

Pydantic's JSON schema is turned into a Kubernetes *structural* schema: `$ref`s inlined, `Optional`
expressed by omission (no `anyOf` with null), titles dropped, int-or-string marked, nested blocks
defaulted to `{}` so the API server fills in their fields' defaults. Every field's description comes
from the models (a unit test fails on a field without one), with its scalar default appended.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from hypersend_operator import api

CRD_FILENAME = f"{api.GROUP}_{api.PLURAL}.yaml"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[2] / "crds" / CRD_FILENAME
MAX_NAME_LENGTH = 40  # leaves room for child names such as "<name>-mongo-0" within 63 chars

_DROP = {"title"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """Map one pydantic JSON-schema node to a structural Kubernetes schema node."""
    if not isinstance(node, dict):
        return node
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is not None:
        target = defs[ref.rsplit("/", 1)[-1]]
        return _structural({**target, **node}, defs)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        branches = [b for b in node.pop("anyOf") if b != {"type": "null"}]
        if len(branches) != 1:
            raise ValueError(f"cannot express anyOf {branches} structurally")
        if node.get("default", ...) is None:
            del node["default"]
        return _structural({**branches[0], **node}, defs)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = _structural(value, defs)
        elif key == "additionalProperties":
            continue  # `false` from extra="forbid": the API server prunes unknown fields anyway
        elif key == "anyOf":
            out[key] = [{k: v for k, v in b.items() if k != "title"} for b in value]
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" in out:
        out.pop("additionalProperties", None)
    _state_default(out)
    return out


def _state_default(node: dict[str, Any]) -> None:
    """Append a scalar default to the description (`kubectl explain` does not show defaults)."""
    default = node.get("default")
    description = node.get("description")
    if default is None or isinstance(default, dict | list) or not description:
        return
    if "Default:" in description:
        return
    shown = str(default).lower() if isinstance(default, bool) else str(default)
    node["description"] = f"{description.rstrip()} Default: {shown}."


def _sorted(node: Any, *, schema: bool) -> Any:
    """Order schema keywords alphabetically (as controller-gen does) but keep property order."""
    if isinstance(node, list):
        return [_sorted(item, schema=schema) for item in node]
    if not isinstance(node, dict):
        return node
    if not schema:  # a `properties` map or a `default` value: keep the declared order
        return {k: _sorted(v, schema=True) for k, v in node.items()}
    out: dict[str, Any] = {}
    for key in sorted(node):
        value = node[key]
        if key == "properties":
            out[key] = _sorted(value, schema=False)
        elif key in ("items", "additionalProperties"):
            out[key] = _sorted(value, schema=True)
        else:
            out[key] = value
    return out


def schema_of(model: type[api.ApiModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    result: dict[str, Any] = _sorted(_structural(raw, defs), schema=True)
    return result


class _NoAliasDumper(yaml.SafeDumper):
    """Shared sub-schemas must be written out in full: CRDs with YAML anchors confuse tools."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


UNOBSERVED_STATUS: dict[str, Any] = {"observedGeneration": 0}


def build_crd() -> dict[str, Any]:
    spec = schema_of(api.HypersendClusterSpec)
    status = schema_of(api.HypersendClusterStatus)
    # The API server defaults a missing status on every read, so a CR the operator has not seen
    # yet says "generation 1 not observed": kstatus reads InProgress from the first instant
    # instead of Current (what it concludes from no status at all).
    status["default"] = UNOBSERVED_STATUS
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": api.CRD_NAME,
            "labels": {"app.kubernetes.io/part-of": "hypersend"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": ["hypersend"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {
                            "name": "Ready",
                            "type": "string",
                            "description": "Ready/desired chat pods",
                            "jsonPath": ".status.chat.ready",
                        },
                        {
                            "name": "Connections",
                            "type": "integer",
                            "description": "Open WebSocket connections",
                            "jsonPath": ".status.chat.connections",
                        },
                        {
                            "name": "Age",
                            "type": "date",
                            "jsonPath": ".metadata.creationTimestamp",
                        },
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A Hypersend real-time chat backend on Kubernetes.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                            "x-kubernetes-validations": [
                                {
                                    "rule": f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
                                    "message": f"metadata.name must be at most {MAX_NAME_LENGTH} "
                                    "characters (child names such as <name>-mongo-0 must fit "
                                    "in 63)",
                                }
                            ],
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    header = "# Generated from hypersend_operator.api by `python -m hypersend_operator.crd`.\n"
    body = yaml.dump(
        build_crd(), Dumper=_NoAliasDumper, sort_keys=False, width=100, allow_unicode=True
    )
    return header + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    wanted = render()
    path: Path = args.output
    if args.check:
        current = path.read_text() if path.exists() else ""
        if current != wanted:
            print(f"{path} is out of date; run `python -m hypersend_operator.crd`", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(wanted)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
