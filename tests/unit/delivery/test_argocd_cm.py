"""argocd/argocd-cm.yaml carries exactly the committed Lua scripts."""

from __future__ import annotations

import pytest
import yaml

from tests.unit.delivery import argocd_cm, glua

pytestmark = pytest.mark.unit


def test_configmap_is_generated_from_the_lua_files() -> None:
    assert argocd_cm.CM_PATH.read_text() == argocd_cm.render(), (
        "argocd/argocd-cm.yaml is stale: regenerate it as argocd_cm.py's docstring says"
    )


def test_configmap_entries_parse_back_to_the_scripts() -> None:
    data = yaml.safe_load(argocd_cm.CM_PATH.read_text())["data"]
    assert data["resource.customizations.health.hypersend.io_HypersendCluster"] == (
        glua.HEALTH.read_text()
    )
    actions = yaml.safe_load(data["resource.customizations.actions.hypersend.io_HypersendCluster"])
    assert actions["discovery.lua"] == glua.DISCOVERY.read_text()
    assert {d["name"]: d["action.lua"] for d in actions["definitions"]} == {
        name: glua.action(name).read_text() for name in glua.ACTIONS
    }
