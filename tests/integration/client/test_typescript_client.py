"""@hypersend/client (clients/typescript) against real chat server processes: this test starts
the servers and runs the package's own tests with node's test runner (``npm test``: a type-checked
build, then ``node --test``), which reach the servers over loopback.

``./dev setup`` installs the package's pinned dev dependencies (``npm ci``, from the committed
package-lock.json).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.chat import REPO_ROOT, ChatServerFactory

pytestmark = pytest.mark.integration

PACKAGE = REPO_ROOT / "clients" / "typescript"


def test_typescript_client_suite_passes_against_real_servers(
    chat_server_factory: ChatServerFactory,
) -> None:
    npm = shutil.which("npm")
    assert npm is not None, "npm is missing: ./dev setup installs Node.js"
    assert (PACKAGE / "node_modules" / "typescript").is_dir(), (
        "the package's dev dependencies are missing: run ./dev setup (npm ci)"
    )
    # 4 s tokens: the suite sees the client refresh them by itself.
    main = chat_server_factory.start(access_token_ttl_seconds=4)
    # Pings every 0.5 s: the suite freezes this server and expects the silence to be noticed.
    drained = chat_server_factory.start(ws_ping_interval_seconds=0.5)
    assert drained.process is not None
    env = {
        **os.environ,
        "HYPERSEND_URL": main.url,
        "HYPERSEND_DRAIN_URL": drained.url,
        "HYPERSEND_DRAIN_PID": str(drained.process.pid),
        # node reaches loopback only; no proxy may capture it.
        "NO_PROXY": "127.0.0.1",
    }
    result = subprocess.run(
        [npm, "test"],
        cwd=PACKAGE,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    summary = {
        key: int(value)
        for line in output.splitlines()
        if line.startswith("# ") and len(parts := line[2:].split()) == 2 and parts[1].isdigit()
        for key, value in [parts]
    }
    assert summary.get("fail") == 0, output[-3000:]
    assert summary.get("pass", 0) >= 7, output[-3000:]


def test_the_served_web_client_is_the_build_of_its_sources(tmp_path: Path) -> None:
    """chatserver/webclient/js is generated (``npm run build:web``) and committed, so the server
    image needs no Node.js; it must match its TypeScript sources."""
    npx = shutil.which("npx")
    assert npx is not None, "npm is missing: ./dev setup installs Node.js"
    subprocess.run(
        [npx, "tsc", "-p", "tsconfig.web.json", "--outDir", str(tmp_path)],
        cwd=PACKAGE,
        check=True,
        timeout=120,
    )
    served = REPO_ROOT / "chatserver" / "webclient" / "js"
    built = {p.relative_to(tmp_path): p.read_text() for p in tmp_path.rglob("*.js")}
    committed = {p.relative_to(served): p.read_text() for p in served.rglob("*.js")}
    assert built.keys() == committed.keys()
    stale = [str(name) for name in built if built[name] != committed[name]]
    assert not stale, f"run `npm run build:web` in clients/typescript; stale: {stale}"
