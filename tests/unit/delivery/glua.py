"""Run an ArgoCD Lua script in the real gopher-lua engine (our glua runner, built from source)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypersend_devenv import build

ROOT = Path(__file__).resolve().parents[3]
ARGOCD = ROOT / "argocd"
HEALTH = ARGOCD / "health.lua"
DISCOVERY = ARGOCD / "actions" / "discovery.lua"
ACTIONS = ("pause", "resume", "restart")


def action(name: str) -> Path:
    return ARGOCD / "actions" / name / "action.lua"


def glua_binary() -> Path:
    binary = build.LUA.path("glua")
    if not binary.exists():
        build.ensure(["gopher-lua"])
    return binary


def run(script: Path, obj: dict[str, Any]) -> Any:
    proc = subprocess.run(
        [str(glua_binary()), str(script)],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode != 0:
        pytest.fail(f"{script.name} failed in gopher-lua: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def health(obj: dict[str, Any]) -> dict[str, str]:
    result = run(HEALTH, obj)
    assert isinstance(result, dict)
    return {str(k): str(v) for k, v in result.items()}
