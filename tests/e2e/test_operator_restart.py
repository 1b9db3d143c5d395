"""Restarting the operator mid-reconcile converges: a pass cut short by SIGKILL is redone from
the level state on resume, with the generated secrets kept (never rotated by a restart)."""

from __future__ import annotations

import signal
import time

import pytest

from tests.fixtures.operator import ClusterHelper

pytestmark = pytest.mark.e2e


def test_restart_mid_reconcile_converges(hsc: ClusterHelper) -> None:
    hsc.apply(hsc.manifest())
    # Kill the operator as soon as the first child exists: the pass is mid-flight.
    hsc.wait_for(lambda: hsc.exists("secret", "demo-jwt"), "first child", timeout=30)
    hsc.operator.stop(signal.SIGKILL)
    try:
        jwt = hsc.get("secret", "demo-jwt")["data"]
        # Meanwhile the spec changes; the restarted operator must see it on resume.
        doc = hsc.manifest()
        doc["spec"]["chat"]["logLevel"] = "warning"
        hsc.kube.apply(doc)
        time.sleep(1)
    finally:
        hsc.operator.start()

    status = hsc.wait_phase("Ready", timeout=120)
    assert status["observedGeneration"] == 2
    assert hsc.get("secret", "demo-jwt")["data"] == jwt  # not rotated by the restart
    assert hsc.get("configmap", "demo-chat")["data"]["HYPERSEND_LOG_LEVEL"] == "warning"
