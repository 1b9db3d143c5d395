"""Run the helm binary (built from its Go module) on the chart; render to parsed objects."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml
from hypersend_devenv import build

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "hypersend-operator"
CRD_FILE = ROOT / "crds" / "hypersend.io_hypersendclusters.yaml"


def binary() -> Path:
    path = build.HELM.path("helm")
    if not path.exists():
        build.ensure(["helm"])
    return path


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(binary()), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc


def set_args(values: dict[str, str] | None) -> list[str]:
    return [a for k, v in (values or {}).items() for a in ("--set", f"{k}={v}")]


def template_text(values: dict[str, str] | None = None, namespace: str = "hypersend-system") -> str:
    return helm("template", "hs", str(CHART), "--namespace", namespace, *set_args(values)).stdout


def render(
    values: dict[str, str] | None = None, namespace: str = "hypersend-system"
) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(template_text(values, namespace)) if d]


def one(objs: list[dict[str, Any]], kind: str, namespace: str | None = None) -> dict[str, Any]:
    found = [
        o
        for o in objs
        if o["kind"] == kind and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]
    assert len(found) == 1, f"expected one {kind} in {namespace}, got {len(found)}"
    return found[0]
