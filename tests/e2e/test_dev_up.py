"""`./dev up` in two checkouts at once: every port is picked free at start and recorded in the
state files, so the two environments never collide (tools/hypersend_devenv/up.py).

Each "checkout" is its own state dir (HYPERSEND_STATE_DIR), exactly what a second clone gets from
its own `.hypersend/`. Both run the whole `up` (local cluster, operator, examples/dev.yaml Ready)
at the same time, then `up --down`. Local clusters only: this is the dev environment itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.real_node, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]


def _env(state_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HYPERSEND_STATE_DIR": str(state_dir),
        "PYTHONPATH": os.pathsep.join([str(REPO / "tools"), os.environ.get("PYTHONPATH", "")]),
    }


def _up(state_dir: Path, *args: str) -> subprocess.Popen[str]:
    log = (state_dir.parent / f"up{'-'.join(args)}.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "hypersend_devenv.up", "--timeout", "400", *args],
        env=_env(state_dir), stdout=log, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )  # fmt: skip


def _healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        return bool(resp.status == 200)


@pytest.fixture
def checkouts(tmp_path: Path) -> Iterator[list[Path]]:
    if os.environ.get("HYPERSEND_KUBECONFIG"):
        pytest.skip("`./dev up` starts its own local cluster")
    dirs = [tmp_path / name / "cluster" for name in ("a", "b")]
    for d in dirs:
        d.parent.mkdir(parents=True)
    try:
        yield dirs
    finally:
        # Stop everything `up` started, whatever happened; both at once, as they were started.
        for down in [_up(d, "--down") for d in dirs]:
            down.wait(120)


def test_two_checkouts_run_dev_up_side_by_side(checkouts: list[Path]) -> None:
    runs = [_up(d) for d in checkouts]
    codes = [r.wait(600) for r in runs]
    logs = [(d.parent / "up.log").read_text() for d in checkouts]
    assert codes == [0, 0], "\n\n".join(logs)
    for log in logs:
        assert "default/dev Ready in" in log
        # The real metric path: the chat pod's gauge, scraped and served to the HPA.
        assert "the HPA reads 0 open WebSockets through Prometheus" in log, log

    ports: list[list[int]] = []
    for d in checkouts:
        cluster_state = json.loads((d / "state.json").read_text())
        operator_ports = json.loads((d.parent / "operator" / "state.json").read_text())["ports"]
        assert set(operator_ports) == {"operator_metrics", "operator_health"}
        assert _healthy(operator_ports["operator_health"])
        adapter = cluster_state.get("extra", {}).get("metrics_adapter", {})
        ports.append(
            [*cluster_state["ports"].values(), *adapter.values(), *operator_ports.values()]
        )
    every = [p for checkout in ports for p in checkout]
    assert len(every) == len(set(every)), f"ports shared between the checkouts: {ports}"
