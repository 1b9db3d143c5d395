"""Background processes that outlive the Python process that started them.

Each component runs in its own session (so its own process group), with stdout and stderr in a log
file. A `ProcessRecord` is what survives in the state file: enough to find the process again, check
that the pid still belongs to the binary we started (pids get reused), and stop its whole group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    binary: str
    log: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            binary=str(data["binary"]),
            log=str(data["log"]),
        )


def start(
    name: str,
    argv: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    binary: str | None = None,
) -> ProcessRecord:
    """Start `argv` detached in a new session, appending its output to `log`.

    `binary` is the program the process finally runs when argv[0] is a wrapper that execs it
    (nsenter, sh): the record must name what /proc shows, to recognise the process later.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
        )
    _CHILDREN[proc.pid] = proc
    return ProcessRecord(name=name, pid=proc.pid, binary=binary or str(argv[0]), log=str(log))


# Popen objects of processes started by this interpreter, so that stopping them also reaps them
# (otherwise they linger as zombies of a long-lived parent such as pytest).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def is_running(record: ProcessRecord) -> bool:
    """True when the pid is alive, not a zombie, and still runs the binary we started."""
    child = _CHILDREN.get(record.pid)
    if child is not None:
        # Our own unreaped child: its pid cannot have been reused. (Its cmdline can read empty
        # for a moment right after exec, so don't look there.)
        return child.poll() is None
    stat = _read_stat(record.pid)
    if stat is None or stat[0] == "Z":
        return False
    try:
        cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and cmdline[0].decode(errors="replace") == record.binary


def exit_description(record: ProcessRecord) -> str:
    """How a process this interpreter started ended ("exit code 1", "killed by SIGKILL")."""
    child = _CHILDREN.get(record.pid)
    code = child.poll() if child is not None else None
    if code is None:
        return "gone" if not is_running(record) else "running"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def group_members(pgids: Iterable[int]) -> list[int]:
    """Live (non-zombie) pids whose process group is one of `pgids`."""
    wanted = set(pgids)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read_stat(int(entry.name))
        if stat is not None and stat[0] != "Z" and stat[1] in wanted:
            found.append(int(entry.name))
    return found


def stop(records: Sequence[ProcessRecord], timeout: float = 15.0) -> list[int]:
    """Stop each record's process group in reverse start order: SIGTERM, then SIGKILL.

    One group at a time, because a server whose storage vanishes under it (the API server after
    etcd) spends its whole grace period retrying. Returns the pids still alive afterwards (empty
    when everything is gone). A record whose pid no longer runs its binary is skipped: that pid
    belongs to someone else now.
    """
    groups = [r.pid for r in reversed(records) if is_running(r)]
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)
        if not _wait_gone(pgid, timeout):
            _signal_group(pgid, signal.SIGKILL)
            _wait_gone(pgid, 5.0)
    return group_members(groups)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        _reap()
        if not group_members([pgid]):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def log_tail(path: str | Path, lines: int = 30) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _reap() -> None:
    for pid, child in list(_CHILDREN.items()):
        if child.poll() is not None:
            del _CHILDREN[pid]


def _read_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process group id) from /proc/<pid>/stat, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    rest = raw[raw.rfind(")") + 2 :].split()
    return rest[0], int(rest[2])
