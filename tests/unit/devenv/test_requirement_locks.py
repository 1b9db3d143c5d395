"""The hash-locked installs (requirements/*.txt, hack/lock-requirements) agree with the pins in
pyproject.toml, lock every file by hash, and are what the dev setup and both images install."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
REQUIREMENTS = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(requirements: list[str]) -> dict[str, str]:
    found = (PIN.match(r) for r in requirements)
    return {normalized(m[1]): m[2] for m in found if m}


def pyproject(path: Path = ROOT / "pyproject.toml") -> dict[str, object]:
    return tomllib.loads(path.read_text())


def wanted(extra: str) -> dict[str, str]:
    """The pins of `extra` with what it pulls in from the project's own extras and dependencies."""
    project = pyproject()["project"]
    assert isinstance(project, dict)
    requirements: list[str] = [*project["dependencies"], *project["optional-dependencies"][extra]]
    for requirement in list(requirements):
        if (own := re.match(r"^hypersend\[([a-z,]+)\]$", requirement)) is not None:
            for other in own[1].split(","):
                requirements += project["optional-dependencies"][other]
    return pins(requirements)


def locked(name: str) -> dict[str, list[str]]:
    """`name==version` -> its hashes, for each requirement of a lock file."""
    entries: dict[str, list[str]] = {}
    current = ""
    for line in (REQUIREMENTS / name).read_text().splitlines():
        if (match := PIN.match(line)) is not None:
            current = f"{normalized(match[1])}=={match[2]}"
            entries[current] = []
        elif (digest := re.search(r"--hash=sha256:([0-9a-f]{64})", line)) is not None:
            entries[current].append(digest[1])
    return entries


@pytest.mark.parametrize(
    ("lock", "extra"), [("server.txt", "server"), ("operator.txt", "operator"), ("dev.txt", "dev")]
)
def test_each_lock_holds_the_pyproject_pins_and_hashes_every_entry(lock: str, extra: str) -> None:
    entries = locked(lock)
    missing = [f"{n}=={v}" for n, v in wanted(extra).items() if f"{n}=={v}" not in entries]
    assert not missing, f"requirements/{lock} is stale, run hack/lock-requirements: {missing}"
    assert all(entries.values()), [e for e, hashes in entries.items() if not hashes]


def test_the_dev_lock_holds_the_python_clients_pins() -> None:
    client = pyproject(ROOT / "clients" / "python" / "pyproject.toml")["project"]
    assert isinstance(client, dict)
    entries = locked("dev.txt")
    assert all(f"{n}=={v}" in entries for n, v in pins(client["dependencies"]).items())


def test_the_build_lock_holds_the_build_backend() -> None:
    system = pyproject()["build-system"]
    assert isinstance(system, dict)
    entries = locked("build.txt")
    assert all(f"{n}=={v}" in entries for n, v in pins(system["requires"]).items())
    assert any(e.startswith("pip==") for e in entries)


@pytest.mark.parametrize(("dockerfile", "lock"), [("server", "server"), ("operator", "operator")])
def test_the_images_install_only_from_the_locks(dockerfile: str, lock: str) -> None:
    text = (ROOT / f"Dockerfile.{dockerfile}").read_text()
    installs = re.findall(r"pip install[^&\n]*", text)
    assert f"--require-hashes -r requirements/{lock}.txt" in text
    assert "--require-hashes -r requirements/build.txt" in text
    # Everything else pip installs is the project's own wheel, without dependencies.
    unlocked = [i for i in installs if "--require-hashes" not in i and "--no-deps" not in i]
    assert not unlocked, unlocked


def test_the_dev_setup_installs_only_from_the_locks() -> None:
    text = (ROOT / "dev").read_text()
    installs = re.findall(r"pip install[^\n]*", text)
    assert installs
    unlocked = [i for i in installs if "--require-hashes" not in i and "--no-deps" not in i]
    assert not unlocked, unlocked
