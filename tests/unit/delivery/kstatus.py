"""Compute an object's status with the real kstatus library (sigs.k8s.io/cli-utils
pkg/kstatus/status, what Flux, kpt and cli-utils use), through our small `kstatus` command built
from its Go module (tools/gomod/kstatus)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypersend_devenv import build


def kstatus_binary() -> Path:
    binary = build.KSTATUS.path("kstatus")
    if not binary.exists():
        build.ensure(["kstatus"])
    return binary


def compute(obj: dict[str, Any]) -> dict[str, Any]:
    """{"status": Current | InProgress | Failed | Terminating | ..., "message", "conditions"}."""
    proc = subprocess.run(
        [str(kstatus_binary())],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode != 0:
        pytest.fail(f"kstatus failed: {proc.stderr.strip()}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result
