"""What the Dockerfiles do, minus Docker: copy the build context their COPY lines name, `pip
install` the extra their builder stage installs into a clean virtual environment, and run the
exec-form entry point they declare. No Docker engine runs here; this proves the install and the
entry points work from the repository alone.

Bounded: pip's own cache makes a rerun cheap; the first run downloads the pinned wheels from PyPI.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.unit.delivery import dockerfile

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT = 900


@dataclass(frozen=True)
class Image:
    """An image's install, realised as a venv: its `bin/` holds the entry point."""

    venv: Path
    entrypoint: list[str]

    def command(self, *args: str) -> list[str]:
        return [str(self.venv / "bin" / self.entrypoint[0]), *self.entrypoint[1:], *args]


def build_context(text: str, dest: Path) -> Path:
    """Copy what the builder stage's COPY lines copy into its WORKDIR; return that WORKDIR."""
    builder = dockerfile.stages(text)[0]
    workdir = dest
    for ins in builder.instructions:
        if ins.keyword == "WORKDIR":
            workdir = dest / ins.args.strip().lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif ins.keyword == "COPY":
            *sources, target = shlex.split(ins.args)
            assert not any(s.startswith("--") for s in sources), "COPY flags in the builder"
            for source in sources:
                into = workdir / target
                src = ROOT / source
                if src.is_dir():
                    shutil.copytree(
                        src, into, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                    )
                else:
                    into.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, into / src.name)
    return workdir


def install_image(name: str, tmp: Path) -> Image:
    text = (ROOT / name).read_text()
    workdir = build_context(text, tmp / "context")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PIP_NO_CACHE_DIR", None)  # the cache is what keeps this bounded
    for target in dockerfile.pip_install_targets(text):
        proc = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", target],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
        assert proc.returncode == 0, f"pip install {target} failed:\n{proc.stdout}{proc.stderr}"
    entrypoint = dockerfile.entrypoint(text)
    assert entrypoint is not None
    return Image(venv, entrypoint)


@pytest.fixture(scope="module")
def operator_image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return install_image("Dockerfile.operator", tmp_path_factory.mktemp("operator-image"))


@pytest.fixture(scope="module")
def server_image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return install_image("Dockerfile.server", tmp_path_factory.mktemp("server-image"))


def run(cmd: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, env={**os.environ, **env}, check=False
    )


def test_operator_entrypoint_runs(operator_image: Image) -> None:
    proc = run(operator_image.command("--help"))
    assert proc.returncode == 0, proc.stderr
    assert "--all-namespaces" in proc.stdout
    # The kubectl plugin ships with the operator's install.
    plugin = run([str(operator_image.venv / "bin" / "kubectl-hypersend"), "--help"])
    assert plugin.returncode == 0, plugin.stderr
    assert "restart" in plugin.stdout


def test_operator_image_does_not_carry_the_server(operator_image: Image) -> None:
    proc = run([str(operator_image.venv / "bin" / "python"), "-c", "import fastapi"])
    assert proc.returncode != 0
    assert "No module named 'fastapi'" in proc.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server_process(
    server_image: Image, redis_url: str, mongo_url: str, mongo_db_name: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERSEND_")}
    env.update(
        HYPERSEND_HOST="127.0.0.1",
        HYPERSEND_PORT=str(port),
        HYPERSEND_REDIS_URL=redis_url,
        HYPERSEND_MONGO_URL=mongo_url,
        HYPERSEND_MONGO_DB=mongo_db_name,
        HYPERSEND_JWT_SECRET="x" * 40,
        HYPERSEND_DRAIN_DELAY_SECONDS="0.1",
        HYPERSEND_DRAIN_SECONDS="3",
    )
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        server_image.command(), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
    )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def test_server_entrypoint_serves_ready(
    server_process: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    proc, url = server_process
    deadline = time.monotonic() + 40
    status = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            status = httpx.get(f"{url}/readyz", timeout=2).status_code
            if status == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert status == 200, f"server from the clean install never became ready:\n{log[-3000:]}"
    proc.send_signal(signal.SIGTERM)  # what the kubelet sends: the server drains and exits
    assert proc.wait(timeout=20) == 0, log[-3000:]


def test_server_entrypoint_refuses_bad_config(server_image: Image) -> None:
    proc = run(server_image.command(), HYPERSEND_JWT_SECRET="short")
    assert proc.returncode != 0
    assert "HYPERSEND_JWT_SECRET" in proc.stderr
