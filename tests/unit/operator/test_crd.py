"""The committed CRD is the one the models generate, and it is a structural schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypersend_operator import crd

pytestmark = pytest.mark.unit

COMMITTED = Path(__file__).resolve().parents[3] / "crds" / crd.CRD_FILENAME


def test_committed_crd_matches_the_models() -> None:
    assert COMMITTED.read_text() == crd.render(), (
        "crds/ is out of date: run `python -m hypersend_operator.crd`"
    )


def test_check_mode_detects_drift(tmp_path: Path) -> None:
    target = tmp_path / "crd.yaml"
    assert crd.main(["--check", "--output", str(target)]) == 1  # missing
    assert crd.main(["--output", str(target)]) == 0
    assert crd.main(["--check", "--output", str(target)]) == 0
    target.write_text(target.read_text().replace("maxReplicas", "maxReplica"))
    assert crd.main(["--check", "--output", str(target)]) == 1


def _version() -> dict[str, Any]:
    doc = yaml.safe_load(COMMITTED.read_text())
    assert doc["spec"]["group"] == "hypersend.io"
    (version,) = doc["spec"]["versions"]
    assert version["name"] == "v1alpha1"
    return dict(version)


def _nodes(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, sub in node.get("properties", {}).items():
            yield from _nodes(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            yield from _nodes(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from _nodes(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural() -> None:
    schema = _version()["schema"]["openAPIV3Schema"]
    for path, node in _nodes(schema):
        assert "$ref" not in node, path
        assert "title" not in node, path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{path}: anyOf outside int-or-string"
        if "properties" in node:
            assert "additionalProperties" not in node, path
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path}: lists must be bounded"


def test_every_cel_rule_has_a_message() -> None:
    schema = _version()["schema"]["openAPIV3Schema"]
    rules = [r for _, n in _nodes(schema) for r in n.get("x-kubernetes-validations", [])]
    assert len(rules) >= 12
    for rule in rules:
        assert rule["message"].strip(), rule


def test_mode_and_storage_are_immutable() -> None:
    spec = _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    mongo = spec["mongo"]["properties"]
    assert {"rule": mongo["mode"]["x-kubernetes-validations"][0]["rule"]} == {
        "rule": "self == oldSelf"
    }
    storage = mongo["inCluster"]["properties"]["storage"]
    assert storage["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"


def test_nested_defaults_are_whole_objects() -> None:
    # The API server evaluates CEL against defaults as written, so `{}` would fail.
    spec = _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["autoscaling"]["default"]["minReplicas"] == 2
    assert spec["redis"]["default"] == {"mode": "InCluster"}


def test_printer_columns_and_status_subresource() -> None:
    version = _version()
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Ready": ".status.chat.ready",
        "Connections": ".status.chat.connections",
        "Age": ".metadata.creationTimestamp",
    }
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert set(status) == {"observedGeneration", "phase", "conditions", "chat"}
    assert set(status["chat"]["properties"]) == {
        "replicas",
        "readyReplicas",
        "ready",
        "selector",
        "connections",
    }
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def _fields(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field `kubectl explain` lists: properties, through list items and map values."""
    for key, sub in node.get("properties", {}).items():
        yield f"{path}.{key}", sub
        yield from _fields(sub, f"{path}.{key}")
    for inner in ("items", "additionalProperties"):
        if isinstance(node.get(inner), dict):
            yield from _fields(node[inner], f"{path}[]" if inner == "items" else f"{path}{{}}")


def test_every_spec_and_status_field_is_documented() -> None:
    """`kubectl explain hypersendcluster.spec...` shows a description for every field."""
    schema = _version()["schema"]["openAPIV3Schema"]
    missing = [
        path
        for top in ("spec", "status")
        for path, node in [
            (f".{top}", schema["properties"][top]),
            *_fields(schema["properties"][top], f".{top}"),
        ]
        if not str(node.get("description", "")).strip()
    ]
    assert not missing, f"{len(missing)} field(s) without a description: {missing}"


def test_scalar_defaults_are_stated_in_the_description() -> None:
    schema = _version()["schema"]["openAPIV3Schema"]
    for path, node in _fields(schema["properties"]["spec"], ".spec"):
        default = node.get("default")
        if default is not None and not isinstance(default, dict | list):
            assert "Default" in node["description"], f"{path}: {node['description']!r}"
