"""Render argocd/argocd-cm.yaml (the argocd-cm entries that install health.lua and the actions)
from the Lua files, so the two never drift.

Regenerate: `PYTHONPATH=tools .venv/bin/python -m tests.unit.delivery.argocd_cm`.
"""

from __future__ import annotations

from typing import Any

import yaml

from tests.unit.delivery import glua

CM_PATH = glua.ARGOCD / "argocd-cm.yaml"
KEY = "hypersend.io_HypersendCluster"
HEADER = """\
# Generated from argocd/health.lua and argocd/actions/ by tests/unit/delivery/argocd_cm.py; a unit
# test fails when they differ. Merge into ArgoCD's argocd-cm ConfigMap, for example:
#   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file argocd/argocd-cm.yaml
"""


class _Literal(str):
    """A string dumped in YAML block style, so the Lua stays readable in the ConfigMap."""


def _literal(dumper: yaml.SafeDumper, data: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Literal, _literal)


def render() -> str:
    actions: dict[str, Any] = {
        "discovery.lua": _Literal(glua.DISCOVERY.read_text()),
        "definitions": [
            {"name": name, "action.lua": _Literal(glua.action(name).read_text())}
            for name in glua.ACTIONS
        ],
    }
    actions_text = yaml.dump(actions, Dumper=_Dumper, sort_keys=False, width=1000)
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "argocd-cm",
            "namespace": "argocd",
            "labels": {"app.kubernetes.io/part-of": "argocd"},
        },
        "data": {
            f"resource.customizations.health.{KEY}": _Literal(glua.HEALTH.read_text()),
            f"resource.customizations.actions.{KEY}": _Literal(actions_text),
        },
    }
    return HEADER + yaml.dump(cm, Dumper=_Dumper, sort_keys=False, width=1000)


if __name__ == "__main__":
    CM_PATH.write_text(render())
    print(f"wrote {CM_PATH}")
