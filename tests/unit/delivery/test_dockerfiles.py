"""The two Dockerfiles follow the image rules; the rule checker itself catches each violation."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.unit.delivery import dockerfile

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
# What each image pip-installs: the hash-locked dependencies of its extra, then the project's own
# wheel without dependencies (tests/unit/devenv/test_requirement_locks.py checks the flags).
IMAGES = {
    name: ["-r requirements/build.txt", f"-r requirements/{extra}.txt", "/tmp/wheel/*.whl"]
    for name, extra in (("Dockerfile.operator", "operator"), ("Dockerfile.server", "server"))
}
GOOD = """\
# syntax=docker/dockerfile:1
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE} AS builder
RUN python -m venv /opt/v && \\
    /opt/v/bin/pip install ".[server]"
FROM ${BASE_IMAGE}
COPY --from=builder /opt/v /opt/v
USER 10001:10001
ENTRYPOINT ["hypersend-server"]
"""


def console_scripts() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(project["scripts"])


@pytest.mark.parametrize(("name", "installs"), sorted(IMAGES.items()))
def test_dockerfile_follows_the_image_rules(name: str, installs: list[str]) -> None:
    text = (ROOT / name).read_text()
    assert dockerfile.violations(text) == []
    assert dockerfile.pip_install_targets(text) == installs
    argv = dockerfile.entrypoint(text)
    assert argv is not None
    assert argv[0] in console_scripts(), f"{argv[0]} is not a console script in pyproject.toml"


def test_dockerignore_sends_only_what_the_images_install() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("**")] == "**"
    for needed in ("!pyproject.toml", "!README.md", "!requirements/", "!chatserver/", "!operator/"):
        assert needed in lines


def test_checker_accepts_a_good_dockerfile() -> None:
    assert dockerfile.violations(GOOD) == []
    assert dockerfile.pip_install_targets(GOOD) == [".[server]"]


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("FROM ${BASE_IMAGE}\n", "", "not multi-stage"),
        ("=python:3.11-slim-bookworm", "=python:3.11", "is not the pinned"),
        ("=python:3.11-slim-bookworm", "=python:latest", "is not the pinned"),
        ("FROM ${BASE_IMAGE}\n", "FROM python:3.11-slim-bookworm\n", "ARG BASE_IMAGE"),
        ("FROM ${BASE_IMAGE}\n", "FROM python:3.11\n", "is not the pinned"),
        ("USER 10001:10001\n", "", "no USER"),
        ("USER 10001:10001", "USER app", "non-root numeric"),
        ("USER 10001:10001", "USER 0", "non-root numeric"),
        ('ENTRYPOINT ["hypersend-server"]', "ENTRYPOINT hypersend-server", "not exec form"),
        ('ENTRYPOINT ["hypersend-server"]\n', "", "no ENTRYPOINT"),
        ("USER 10001", "RUN apt-get install -y gcc\nUSER 10001", "build tooling"),
        ("COPY --from=builder /opt/v /opt/v\n", "", "copies nothing"),
        ('/opt/v/bin/pip install ".[server]"', "true", "pip-installs"),
    ],
)
def test_checker_names_each_violation(old: str, new: str, complaint: str) -> None:
    bad = GOOD.replace(old, new, 1) if old != "FROM ${BASE_IMAGE}\n" else _final(new)
    assert bad != GOOD
    assert any(complaint in problem for problem in dockerfile.violations(bad)), bad


def _final(replacement: str) -> str:
    """GOOD with its final FROM replaced (the builder FROM stays)."""
    head, sep, tail = GOOD.rpartition("FROM ${BASE_IMAGE}\n")
    return head + replacement + tail if sep else GOOD


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_base_image_is_a_build_argument_defaulting_to_the_public_image(name: str) -> None:
    text = (ROOT / name).read_text()
    assert dockerfile.global_args(text) == {"BASE_IMAGE": dockerfile.PINNED_BASE}
    assert [s.written for s in dockerfile.stages(text)] == ["${BASE_IMAGE}", "${BASE_IMAGE}"]


def test_instructions_join_continuations_and_skip_comments() -> None:
    parsed = dockerfile.instructions("FROM a\n# c\nRUN x \\\n  # inner\n  y\n")
    assert [(i.keyword, i.args, i.line) for i in parsed] == [("FROM", "a", 1), ("RUN", "x  y", 3)]
