"""The loop-thread counter and histogram expose exactly what prometheus_client's would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from chatserver import metrics

pytestmark = pytest.mark.unit

BUCKETS = (0.001, 0.0025, 0.01, 1.0, 30.0)


def _lines(text: bytes, prefix: str) -> list[str]:
    return [line for line in text.decode().splitlines() if line.startswith(prefix)]


def test_loop_histogram_and_counter_match_prometheus_client() -> None:
    values = [0.0, 0.001, 0.0011, 0.0025, 0.5, 30.0, 31.0, 0.003]
    reference = CollectorRegistry()
    histogram = Histogram("ref_seconds", "d", buckets=BUCKETS, registry=reference)
    counter = Counter("ref_total", "d", registry=reference)
    ours = metrics.LoopHistogram("ours_seconds", "d", BUCKETS)
    our_counter = metrics.LoopCounter("ours_total", "d")
    for value in values:
        histogram.observe(value)
        ours.observe(value)
        counter.inc()
        our_counter.inc()
    theirs = _lines(generate_latest(reference), "ref_seconds_")
    mine = _lines(generate_latest(), "ours_seconds_")
    assert [line.replace("ref_", "ours_") for line in theirs if "_created" not in line] == mine
    assert _lines(generate_latest(), "ours_total ") == ["ours_total 8.0"]
    assert _lines(generate_latest(reference), "ref_total ") == ["ref_total 8.0"]
