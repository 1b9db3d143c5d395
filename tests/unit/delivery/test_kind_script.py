"""hack/kind-e2e.sh cannot run here (no Docker): check it parses and does each documented step."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[3] / "hack" / "kind-e2e.sh"


def test_script_parses_and_is_executable() -> None:
    assert SCRIPT.stat().st_mode & 0o111
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "step",
    [
        r"set -euo pipefail",
        r"kind create cluster --name \"\$CLUSTER\"",
        r"docker build -f Dockerfile\.operator",
        r"docker build -f Dockerfile\.server",
        r"kind load docker-image --name \"\$CLUSTER\" \"\$OPERATOR_IMAGE\" \"\$SERVER_IMAGE\"",
        r"helm upgrade --install hypersend-operator charts/hypersend-operator",
        r"HYPERSEND_KUBECONFIG=\$KUBECONFIG_FILE",
        r"-m pytest -m e2e",
    ],
)
def test_script_does_each_step(step: str) -> None:
    assert re.search(step, SCRIPT.read_text()), step
