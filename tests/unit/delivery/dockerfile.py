"""A small Dockerfile reader and the image rules Hypersend's Dockerfiles must follow.

Pure functions: text in, instructions or rule violations out: the fast unit-level check. What the
images really contain is checked on the images themselves, built by buildah
(tests/integration/test_images.py).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

PINNED_BASE = "python:3.11-slim-bookworm"
# The base is this build argument (default PINNED_BASE): the local build passes a Debian-made one.
BASE_ARG = "BASE_IMAGE"
# Anything that compiles or fetches packages has no place in the runtime stage.
BUILD_TOOLS = ("gcc", "g++", "make", "build-essential", "apt-get", "apk", "pip install", "git")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper-case: FROM, RUN, COPY, USER, ENTRYPOINT, ...
    args: str
    line: int


@dataclass
class Stage:
    base: str  # with the global ARG defaults substituted
    name: str | None
    written: str = ""  # the base as the FROM line writes it
    instructions: list[Instruction] = field(default_factory=list)


def instructions(text: str) -> list[Instruction]:
    """Logical instructions: comments dropped, backslash continuations joined."""
    out: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        keyword, _, args = pending.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        pending = ""
    if pending:
        raise ValueError(f"line {start}: continuation never ends")
    return out


def global_args(text: str) -> dict[str, str]:
    """The ARGs declared before the first FROM, with their defaults ("" when none)."""
    found: dict[str, str] = {}
    for ins in instructions(text):
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            found[name.strip()] = default.strip().strip('"')
    return found


def substitute(value: str, args: dict[str, str]) -> str:
    """`${NAME}` and `$NAME` replaced by the ARG defaults (what a plain `docker build` uses)."""
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value
    )


def stages(text: str) -> list[Stage]:
    result: list[Stage] = []
    args = global_args(text)
    for ins in instructions(text):
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            result.append(Stage(base=substitute(words[0], args), name=name, written=words[0]))
        elif not result:
            if ins.keyword != "ARG":
                raise ValueError(f"line {ins.line}: {ins.keyword} before the first FROM")
        else:
            result[-1].instructions.append(ins)
    return result


def exec_form(args: str) -> list[str] | None:
    """The argv of an exec-form (JSON array) ENTRYPOINT/CMD, or None for the shell form."""
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    return None


def entrypoint(text: str) -> list[str] | None:
    final = stages(text)[-1]
    found = [i for i in final.instructions if i.keyword == "ENTRYPOINT"]
    return exec_form(found[-1].args) if found else None


def pip_install_targets(text: str) -> list[str]:
    """What the build stages `pip install` (for example `.[server]`, or `-r requirements/x.txt`
    for a requirements file)."""
    targets: list[str] = []
    for stage in stages(text)[:-1]:
        for ins in stage.instructions:
            if ins.keyword != "RUN":
                continue
            for command in re.split(r"&&|;", ins.args):
                argv = shlex.split(command)
                if len(argv) >= 3 and argv[0].endswith("pip") and argv[1] == "install":
                    args = iter(argv[2:])
                    for arg in args:
                        if arg == "-r":
                            targets.append(f"-r {next(args, '')}")
                        elif not arg.startswith("-"):
                            targets.append(arg)
    return targets


def violations(text: str) -> list[str]:
    """Every rule the Dockerfile breaks, as readable sentences (empty when it is fine)."""
    problems: list[str] = []
    try:
        all_stages = stages(text)
    except ValueError as exc:
        return [str(exc)]
    if len(all_stages) < 2:
        problems.append("not multi-stage: build in one stage, copy the result into a final one")
    for stage in all_stages:
        if stage.base in {s.name for s in all_stages}:
            continue
        pinned = stage.base == PINNED_BASE or stage.base.startswith(PINNED_BASE + "@sha256:")
        if not pinned:
            problems.append(f"base {stage.base!r} is not the pinned {PINNED_BASE}")
        if stage.written not in {f"${{{BASE_ARG}}}", f"${BASE_ARG}"}:
            problems.append(
                f"FROM {stage.written}: name the base through ARG {BASE_ARG} (default"
                f" {PINNED_BASE}) so the local build can pass its own"
            )
    if not all_stages:
        return [*problems, "no FROM"]
    final = all_stages[-1]
    users = [i for i in final.instructions if i.keyword == "USER"]
    if not users:
        problems.append("final stage has no USER: it would run as root")
    else:
        user, _, group = users[-1].args.partition(":")
        if not user.isdigit() or int(user) == 0 or (group and not group.isdigit()):
            problems.append(f"USER {users[-1].args!r} is not a non-root numeric UID[:GID]")
    for ins in final.instructions:
        if ins.keyword == "RUN" and any(tool in ins.args for tool in BUILD_TOOLS):
            problems.append(f"line {ins.line}: build tooling in the final stage: {ins.args}")
    if not any(i.keyword == "COPY" and "--from=" in i.args for i in final.instructions):
        problems.append("final stage copies nothing from a build stage")
    found = [i for i in final.instructions if i.keyword == "ENTRYPOINT"]
    if not found:
        problems.append("final stage has no ENTRYPOINT")
    elif exec_form(found[-1].args) is None:
        problems.append(f"ENTRYPOINT {found[-1].args!r} is not exec form (a JSON array)")
    if not pip_install_targets(text):
        problems.append("no build stage pip-installs the package")
    return problems
