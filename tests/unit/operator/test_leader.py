"""Leader election's decisions (leader.py), without a server: who may take, keep or must leave the
Lease, on the monotonic clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypersend_operator import leader
from hypersend_operator.leader import Action, Observed, Record, Timing

pytestmark = pytest.mark.unit

ME, OTHER = "pod-a_1234", "pod-b_5678"
T = Timing()


def lease(holder: str | None, rv: str = "1", renew: str = "t1", transitions: int = 0) -> Any:
    return {
        "metadata": {"name": "hypersend-operator", "resourceVersion": rv},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": "t0",
            "renewTime": renew,
            "leaseTransitions": transitions,
        },
    }


def seen(holder: str | None, since: float = 100.0, duration: int = 15) -> Observed:
    return Observed(Record(holder, duration, "t0", "t1", 3), "7", since)


def test_no_lease_is_created() -> None:
    assert leader.decide(None, ME, 0.0) is Action.CREATE


def test_our_own_lease_is_renewed() -> None:
    assert leader.decide(seen(ME), ME, 1e9) is Action.RENEW


def test_a_released_lease_is_taken_at_once() -> None:
    assert leader.decide(seen(None, since=100.0), ME, 100.0) is Action.ACQUIRE


@pytest.mark.parametrize(
    ("now", "action"),
    [
        (100.0, Action.FOLLOW),
        (114.9, Action.FOLLOW),
        (115.0, Action.ACQUIRE),
        (500, Action.ACQUIRE),
    ],
)
def test_someone_elses_lease_is_followed_for_its_duration_after_we_saw_it(
    now: float, action: Action
) -> None:
    assert leader.decide(seen(OTHER, since=100.0), ME, now) is action


def test_expiry_counts_from_our_observation_not_from_the_holders_clock() -> None:
    # The holder's renewTime says nothing: a record first seen now is valid for 15 s from now.
    first = leader.observe(None, lease(OTHER, renew="1970-01-01T00:00:00.000000Z"), now=50.0)
    assert first.since == 50.0
    assert leader.decide(first, ME, 60.0) is Action.FOLLOW


def test_the_clock_restarts_only_when_the_record_changes() -> None:
    first = leader.observe(None, lease(OTHER, rv="1", renew="t1"), now=10.0)
    same = leader.observe(first, lease(OTHER, rv="1", renew="t1"), now=20.0)
    assert same.since == 10.0
    renewed = leader.observe(same, lease(OTHER, rv="2", renew="t2"), now=24.0)
    assert renewed.since == 24.0
    assert renewed.resource_version == "2"
    assert leader.decide(renewed, ME, 38.0) is Action.FOLLOW
    assert leader.decide(renewed, ME, 39.0) is Action.ACQUIRE


@pytest.mark.parametrize(
    ("observed", "is_lost"),
    [(None, True), (seen(None), True), (seen(OTHER), True), (seen(ME), False)],
)
def test_a_lease_read_as_someone_elses_or_released_is_lost(
    observed: Observed | None, is_lost: bool
) -> None:
    assert leader.lost(observed, ME) is is_lost


@pytest.mark.parametrize(
    ("observed", "now", "delay"),
    [
        (None, 0.0, 2.0),  # nothing to wait for
        (seen(ME, since=100.0), 200.0, 2.0),  # a leader renews every retry period
        (seen(OTHER, since=100.0), 101.0, 2.0),  # the lease runs long: a normal retry
        (seen(OTHER, since=100.0), 114.5, 0.5),  # ...but not past its expiry
        (seen(OTHER, since=100.0), 115.0, 2.0),  # expired: acquiring is the next step anyway
    ],
)
def test_a_follower_tries_again_when_the_lease_expires(
    observed: Observed | None, now: float, delay: float
) -> None:
    assert leader.next_try(observed, ME, now, 2.0) == delay


def test_acquiring_from_another_holder_counts_a_transition() -> None:
    current = Record(OTHER, 15, "a", "b", 3)
    got = leader.wanted(Action.ACQUIRE, current, ME, "now", 15)
    assert got == Record(ME, 15, "now", "now", 4)


def test_taking_a_released_lease_keeps_the_count() -> None:
    # The release already ended the previous term; client-go counts holder changes only.
    current = Record(None, 1, "a", "b", 4)
    assert leader.wanted(Action.ACQUIRE, current, ME, "now", 15).transitions == 4


def test_creating_starts_at_zero_transitions() -> None:
    assert leader.wanted(Action.CREATE, None, ME, "now", 15) == Record(ME, 15, "now", "now", 0)


def test_renewing_keeps_the_acquire_time_and_moves_the_renew_time() -> None:
    current = Record(ME, 15, "acquired", "old", 2)
    assert leader.wanted(Action.RENEW, current, ME, "new", 15) == Record(
        ME, 15, "acquired", "new", 2
    )


def test_release_clears_the_holder_and_shortens_the_lease() -> None:
    got = leader.released(Record(ME, 15, "a", "b", 2), "now")
    assert got.holder is None
    assert got.duration_seconds == 1
    assert got.spec()["holderIdentity"] is None


def test_record_round_trips_through_the_lease_spec() -> None:
    record = Record.of(lease(OTHER, transitions=5))
    assert Record.of({"spec": record.spec()}) == record


@pytest.mark.parametrize(
    ("renewed_at", "now", "fresh"),
    [
        (None, 0.0, False),  # never renewed
        (100.0, 100.0, True),
        (100.0, 106.9, True),
        (100.0, 107.0, False),  # the renew deadline has passed: stop writing
        (100.0, 130.0, False),  # resumed after SIGSTOP past the lease: stopped before writing
    ],
)
def test_the_fence_holds_only_within_the_renew_deadline(
    renewed_at: float | None, now: float, fresh: bool
) -> None:
    assert leader.is_fresh(renewed_at, now, T.renew_deadline) is fresh


def test_the_fence_closes_before_anyone_else_may_take_over() -> None:
    """A holder's last renew was sent at 0; others saw it at 0 at the earliest. It stops
    writing at the renew deadline, others may take over only after the lease duration."""
    for now in (T.renew_deadline, T.lease_duration):
        holder_writes = leader.is_fresh(0.0, now, T.renew_deadline)
        other_takes = leader.decide(seen(ME, since=0.0, duration=15), OTHER, now) is Action.ACQUIRE
        assert not (holder_writes and other_takes)
    assert not leader.is_fresh(0.0, T.renew_deadline, T.renew_deadline)


def test_timing_is_checked() -> None:
    with pytest.raises(ValueError, match="lease_duration > renew_deadline"):
        Timing(lease_duration=10, renew_deadline=10)


def test_identities_differ_per_process_on_one_host() -> None:
    a, b = leader.default_identity(), leader.default_identity()
    assert a != b
    assert a.rsplit("_", 1)[0] == b.rsplit("_", 1)[0]


# ------------------------------------------------------------------ the command line


@pytest.fixture
def outside_a_pod(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hypersend_operator import __main__ as cli

    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.setattr(cli, "SA_NAMESPACE_FILE", str(tmp_path / "absent"))


@pytest.mark.usefixtures("outside_a_pod")
def test_leader_election_is_off_on_a_workstation() -> None:
    from hypersend_operator.__main__ import parse_args

    args = parse_args(["run"])
    assert args.leader_election is False


@pytest.mark.usefixtures("outside_a_pod")
def test_leader_election_is_on_in_a_pod_or_with_a_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hypersend_operator.__main__ import parse_args

    args = parse_args(["run", "--leader-election-namespace", "ops"])
    assert (args.leader_election, args.leader_election_namespace) == (True, "ops")
    assert args.leader_election_id == "hypersend-operator"
    monkeypatch.setenv("POD_NAMESPACE", "hypersend-system")
    args = parse_args(["run"])
    assert (args.leader_election, args.leader_election_namespace) == (True, "hypersend-system")
    assert parse_args(["run", "--no-leader-election"]).leader_election is False


@pytest.mark.usefixtures("outside_a_pod")
def test_leader_election_without_a_namespace_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from hypersend_operator.__main__ import parse_args

    with pytest.raises(SystemExit):
        parse_args(["run", "--leader-election"])
    assert "--leader-election-namespace" in capsys.readouterr().err


def test_a_namespaced_run_scans_nothing_cluster_wide() -> None:
    from hypersend_operator.__main__ import parse_args, settings

    assert settings(parse_args(["run", "-n", "team-a", "--no-leader-election"])).scanning.disabled
    assert not settings(parse_args(["run", "-A", "--no-leader-election"])).scanning.disabled
