"""Two operator replicas with leader election against the real API server: exactly one writes;
kill -9 of the leader hands over to the other; a leader paused with SIGSTOP past its lease steps
down on SIGCONT without writing.

The suite's operator (no leader election) is stopped for the duration, so that the two replicas
under test are the only writers; it is started again afterwards. Times are printed, not asserted
beyond the takeover happening (bench/ measures speed).
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.kube import KubeCluster
from tests.fixtures.operator import ClusterHelper, OperatorProcess

pytestmark = pytest.mark.e2e

WRITES = "hypersend_operator_api_write_requests_total"
RECONCILES = "hypersend_operator_reconciles_total"
LEADER = "hypersend_operator_leader"
# The goal for a takeover after kill -9 is 15 s; allow slack for a loaded machine.
TAKEOVER_TIMEOUT = 60.0


def child_writes(op: OperatorProcess) -> float:
    """Writes other than to the Lease (the election's own, never fenced)."""
    return sum(
        value
        for key, value in op.metrics().items()
        if key.startswith(WRITES + "{") and 'kind="Lease"' not in key
    )


def follower_skips(op: OperatorProcess) -> float:
    return op.counter(RECONCILES, result="not_leader")


def is_leader(op: OperatorProcess) -> bool:
    try:
        return op.metrics().get(LEADER) == 1.0
    except OSError:
        return False


@dataclass
class Pair:
    kube: KubeCluster
    namespace: str
    lease: str
    a: OperatorProcess
    b: OperatorProcess

    def lease_spec(self) -> dict[str, Any]:
        obj = self.kube.json("get", "lease", self.lease, "-n", self.namespace)
        return dict(obj["spec"])

    def holder(self) -> str | None:
        return self.lease_spec().get("holderIdentity")

    def leader_and_follower(self) -> tuple[OperatorProcess, OperatorProcess]:
        def one_leads() -> tuple[OperatorProcess, OperatorProcess] | None:
            a, b = is_leader(self.a), is_leader(self.b)
            if a != b:
                return (self.a, self.b) if a else (self.b, self.a)
            return None

        found = self.kube.wait_for(one_leads, timeout=60, what="exactly one replica leading")
        assert found is not None
        return found


@pytest.fixture
def pair(hsc: ClusterHelper, tmp_path: Path) -> Iterator[Pair]:
    suite = hsc.operator
    suite.stop()  # a third writer without election would spoil every assertion here
    lease = f"hypersend-operator-{uuid.uuid4().hex[:6]}"
    flags = ("--leader-election-namespace", hsc.namespace, "--leader-election-id", lease)
    a, b = (
        OperatorProcess(
            kubeconfig=hsc.kube.kubeconfig,
            log_path=tmp_path / f"operator-{x}.log",
            resync_seconds=5,
            extra_args=flags,
        )
        for x in "ab"
    )
    try:
        a.start()
        b.start()
        hsc.operator = a
        yield Pair(hsc.kube, hsc.namespace, lease, a, b)
    finally:
        for op in (a, b):
            if op.proc is not None and op.proc.poll() is None:
                op.proc.send_signal(signal.SIGCONT)  # a stopped process ignores SIGTERM
            op.stop()
        hsc.operator = suite
        suite.start()


def config_hash(hsc: ClusterHelper) -> str:
    dep = hsc.get("deployment", f"{hsc.name}-chat")
    return str(dep["spec"]["template"]["metadata"]["annotations"]["hypersend.io/config-hash"])


def change_log_level(hsc: ClusterHelper, level: str) -> str:
    """Change a setting that rolls the chat pods; returns the config hash before the change."""
    before = config_hash(hsc)
    hsc.kube.kubectl(
        "patch", "hypersendcluster", hsc.name, "-n", hsc.namespace, "--type=merge",
        "-p", f'{{"spec": {{"chat": {{"logLevel": "{level}"}}}}}}',
    )  # fmt: skip
    return before


def test_only_the_leader_writes_and_a_clean_stop_hands_over_at_once(
    hsc: ClusterHelper, pair: Pair
) -> None:
    leader, follower = pair.leader_and_follower()
    hsc.apply(hsc.manifest())
    hsc.operator = leader
    hsc.wait_phase("Ready", timeout=120)
    # A change both replicas are told about (kopf's on.update fires on each)...
    before = change_log_level(hsc, "info")
    hsc.wait_for(lambda: config_hash(hsc) != before, "the leader to apply the change")
    # ...and a periodic resync on both after it: the follower had every chance to write.
    skips = follower_skips(follower)
    resyncs = leader.counter(RECONCILES, trigger="resync", result="ok")
    hsc.wait_for(
        lambda: (
            follower_skips(follower) > skips
            and leader.counter(RECONCILES, trigger="resync", result="ok") > resyncs
        ),
        "a resync pass on the leader and a skipped trigger on the follower",
    )
    assert child_writes(leader) > 0
    assert child_writes(follower) == 0, follower.log_tail()
    assert not is_leader(follower)
    assert pair.holder() is not None

    # A clean stop (a rolling update) releases the Lease: the follower takes it within a few
    # retry periods, not a whole lease duration.
    transitions = pair.lease_spec().get("leaseTransitions", 0)
    started = time.monotonic()
    leader.stop()
    hsc.wait_for(lambda: is_leader(follower), "the follower to lead after a clean stop", 30)
    print(f"\nleader after a clean stop of the old one: {time.monotonic() - started:.1f}s")
    spec = pair.lease_spec()
    assert spec["holderIdentity"] is not None
    assert spec.get("leaseTransitions", 0) == transitions  # released, then taken: one term ended


def test_kill_9_of_the_leader_hands_over(hsc: ClusterHelper, pair: Pair) -> None:
    leader, follower = pair.leader_and_follower()
    hsc.apply(hsc.manifest())
    hsc.operator = leader
    hsc.wait_phase("Ready", timeout=120)
    old_holder = pair.holder()
    assert leader.proc is not None
    leader.proc.kill()
    leader.proc.wait(10)
    killed = time.monotonic()
    before = change_log_level(hsc, "warning")
    hsc.operator = follower
    hsc.wait_for(
        lambda: config_hash(hsc) != before, "the other replica to take over", TAKEOVER_TIMEOUT
    )
    took = time.monotonic() - killed
    print(f"\nkill -9 of the leader -> change reconciled by the other replica: {took:.1f}s")
    assert is_leader(follower)
    assert pair.holder() not in (None, old_holder)
    assert child_writes(follower) > 0


def test_a_paused_leader_steps_down_on_resume_without_writing(
    hsc: ClusterHelper, pair: Pair
) -> None:
    leader, follower = pair.leader_and_follower()
    hsc.apply(hsc.manifest())
    hsc.operator = leader
    hsc.wait_phase("Ready", timeout=120)
    old_holder = pair.holder()
    transitions = pair.lease_spec().get("leaseTransitions", 0)
    assert leader.proc is not None
    writes_before = child_writes(leader)
    leader.proc.send_signal(signal.SIGSTOP)
    paused = time.monotonic()
    try:
        hsc.wait_for(
            lambda: pair.holder() not in (None, old_holder),
            "the follower to take the Lease of the paused leader",
            TAKEOVER_TIMEOUT,
        )
        print(f"\nLease taken from the paused leader after {time.monotonic() - paused:.1f}s")
        before = change_log_level(hsc, "error")
        hsc.operator = follower
        hsc.wait_for(lambda: config_hash(hsc) != before, "the new leader to apply a change")
        new_hash = config_hash(hsc)
    finally:
        leader.proc.send_signal(signal.SIGCONT)
    # The old leader runs again: it must have stepped down, and stay down, before any write.
    skips = follower_skips(leader)
    hsc.wait_for(
        lambda: follower_skips(leader) > skips,
        "a trigger on the resumed old leader (its resync) that it skips as a follower",
    )
    assert not is_leader(leader)
    assert child_writes(leader) == writes_before, leader.log_tail()
    # Its per-cluster Ready series went with its leadership (the new leader's are current).
    assert not any(k.startswith("hypersend_operator_cluster_ready{") for k in leader.metrics())
    assert is_leader(follower)
    spec = pair.lease_spec()
    assert spec["holderIdentity"] not in (None, old_holder)
    assert spec.get("leaseTransitions", 0) == transitions + 1
    assert config_hash(hsc) == new_hash
