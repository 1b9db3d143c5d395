"""The garbage collector settings the server sets for itself at start (chatserver/__main__.py).

Each case runs in a fresh interpreter: freezing and thresholds are process-wide.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

PROBE = """
import gc, json, sys
from chatserver.__main__ import tune_garbage_collector
before = gc.get_threshold()
tune_garbage_collector(int(sys.argv[1]))
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def tuned(young_threshold: int) -> dict[str, list[int] | int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(young_threshold)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    result: dict[str, list[int] | int] = json.loads(out)
    return result


def test_the_young_threshold_is_raised_and_startup_objects_are_frozen() -> None:
    result = tuned(50_000)
    before, after = result["before"], result["after"]
    assert isinstance(before, list)
    assert isinstance(after, list)
    assert after == [50_000, *before[1:]]
    # Everything the imports made is out of every later collection.
    assert isinstance(result["frozen"], int)
    assert result["frozen"] > 10_000


def test_zero_keeps_pythons_thresholds() -> None:
    result = tuned(0)
    assert result["after"] == result["before"]
