"""CI's smoke of bench/ws_stacks.py on the stacks the project's environment has (granian and
picows are installed only when the bench itself runs): a few sockets each, one table out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.bench.scripts import run_bench

pytestmark = pytest.mark.integration


def test_smoke_answers_every_socket_on_each_stack(tmp_path: Path) -> None:
    out = tmp_path / "stacks.json"
    stdout = run_bench(
        "ws_stacks.py", "--stacks", "hypersend,uvicorn", "--sockets", "30", "--no-pin",
        "--json", str(out), timeout=120,
    )  # fmt: skip
    assert "| stack | connects/s |" in stdout
    results = {r["stack"]: r for r in json.loads(out.read_text())}
    assert set(results) == {"hypersend", "uvicorn"}
    for result in results.values():
        assert result["failures"] == 0
        assert result["connects_per_second"] > 0
        assert result["cpu_ms_per_connect"] >= 0
