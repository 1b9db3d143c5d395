"""argocd/actions: discovery and the pause / resume / restart actions, run in gopher-lua."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.unit.delivery import glua

pytestmark = pytest.mark.unit


def cr(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "demo", "namespace": "demo", "generation": 1}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"apiVersion": "hypersend.io/v1alpha1", "kind": "HypersendCluster", "metadata": meta}


@pytest.mark.parametrize(
    ("annotations", "enabled"),
    [
        (None, {"pause", "restart"}),
        ({"hypersend.io/paused": "false"}, {"pause", "restart"}),
        ({"hypersend.io/paused": "true"}, {"resume"}),
    ],
)
def test_discovery_enables_what_fits_the_state(
    annotations: dict[str, str] | None, enabled: set[str]
) -> None:
    actions = glua.run(glua.DISCOVERY, cr(annotations))
    assert set(actions) == set(glua.ACTIONS)
    assert {name for name, a in actions.items() if not a["disabled"]} == enabled


@pytest.mark.parametrize("annotations", [None, {"team": "chat"}])
def test_pause_sets_the_annotation(annotations: dict[str, str] | None) -> None:
    out = glua.run(glua.action("pause"), cr(annotations))
    assert out["metadata"]["annotations"] == {**(annotations or {}), "hypersend.io/paused": "true"}
    assert out["metadata"]["name"] == "demo"


def test_resume_sets_the_annotation_to_false() -> None:
    out = glua.run(glua.action("resume"), cr({"hypersend.io/paused": "true"}))
    # Not removed: ArgoCD would restore an emptied annotations map from the old object.
    assert out["metadata"]["annotations"] == {"hypersend.io/paused": "false"}


def test_restart_stamps_a_utc_time() -> None:
    out = glua.run(glua.action("restart"), cr({"team": "chat"}))
    stamp = out["metadata"]["annotations"]["hypersend.io/restartedAt"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp), stamp
    assert out["metadata"]["annotations"]["team"] == "chat"
