"""The image build's pure parts: what the Dockerfiles' build context is and what moves a key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypersend_devenv import images

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("name", ["Dockerfile.server", "Dockerfile.operator"])
def test_build_context_is_what_the_copy_lines_name(name: str) -> None:
    text = (ROOT / name).read_text()
    extra = name.removeprefix("Dockerfile.")
    locks = ["requirements/build.txt", f"requirements/{extra}.txt"]
    assert images.copy_sources(text) == [
        *locks,
        "pyproject.toml",
        "README.md",
        "chatserver",
        "operator",
    ]


def test_copy_sources_skips_stage_copies_flags_and_comments() -> None:
    text = (
        "FROM a AS b\n# COPY ignored.txt /x\nCOPY --chown=1:1 one two \\\n  /dest/\n"
        "FROM c\nCOPY --from=b /opt /opt\nADD three /t\n"
    )
    assert images.copy_sources(text) == ["one", "two", "three"]


def test_context_files_leave_bytecode_and_caches_out(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "mod.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "pkg" / "stale.pyc").write_bytes(b"\0")
    (tmp_path / "pkg" / "data.json").write_text("{}")
    found = sorted(p.relative_to(tmp_path).as_posix() for p in images.source_files(tmp_path))
    assert found == ["pkg/data.json", "pkg/mod.py"]


def test_tree_digest_moves_with_content_name_and_exec_bit(tmp_path: Path) -> None:
    script = tmp_path / "a.sh"
    script.write_text("echo hi\n")
    files = [script]
    base = images.tree_digest(tmp_path, files)
    assert images.tree_digest(tmp_path, files) == base
    script.write_text("echo hi!\n")
    changed = images.tree_digest(tmp_path, files)
    assert changed != base
    os.chmod(script, 0o755)
    assert images.tree_digest(tmp_path, files) != changed
    moved = tmp_path / "b.sh"
    script.rename(moved)
    os.chmod(moved, 0o644)
    assert images.tree_digest(tmp_path, [moved]) not in {base, changed}


def test_digest_separates_its_parts() -> None:
    assert images.digest("ab", "c") != images.digest("a", "bc")


def test_every_local_reference_is_in_the_local_namespace() -> None:
    for spec in images.IMAGES.values():
        ref = spec.ref()
        assert ref.startswith(("ghcr.io/hypersend/", "localhost/hypersend/")), ref
    assert images.IMAGES["chatserver"].ref() == images.SERVER_IMAGE
    assert images.IMAGES["pause"].ref() == images.SANDBOX_IMAGE
