"""`./dev server`: one chat server in the foreground against a local Redis and FerretDB.

Redis and FerretDB (from `hypersend_devenv.datastores`) keep their data under the state directory
(default `.hypersend/server/`, git-ignored), so accounts and rooms survive restarts; `--ephemeral`
uses a temporary directory instead. The JWT signing key is generated once into the state
directory (or taken from HYPERSEND_JWT_SECRET). Any other HYPERSEND_* variable in the
environment is passed through (see docs/configuration.md). Ctrl-C drains the server and stops all.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType

from hypersend_devenv import build
from hypersend_devenv.datastores import LOOPBACK, FerretDBServer, RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = REPO_ROOT / ".hypersend" / "server"


def jwt_secret(state_dir: Path) -> str:
    """HYPERSEND_JWT_SECRET, or a key generated once and kept (mode 0600) in `state_dir`."""
    from_env = os.environ.get("HYPERSEND_JWT_SECRET")
    if from_env:
        return from_env
    path = state_dir / "jwt-secret"
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def server_env(redis_url: str, mongo_url: str, secret: str, host: str, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "HYPERSEND_REDIS_URL": redis_url,
            "HYPERSEND_MONGO_URL": mongo_url,
            "HYPERSEND_JWT_SECRET": secret,
            "HYPERSEND_HOST": host,
            "HYPERSEND_PORT": str(port),
            "HYPERSEND_DRAIN_DELAY_SECONDS": env.get("HYPERSEND_DRAIN_DELAY_SECONDS", "0"),
            "HYPERSEND_DRAIN_SECONDS": env.get("HYPERSEND_DRAIN_SECONDS", "10"),
            "HYPERSEND_POD_NAME": env.get("HYPERSEND_POD_NAME", "dev-server"),
            # A person running a local server wants something to chat with.
            "HYPERSEND_WEB_CLIENT": env.get("HYPERSEND_WEB_CLIENT", "true"),
        }
    )
    return env


def run(state_dir: Path, host: str, port: int) -> int:
    build.ensure(["ferretdb"])
    secret = jwt_secret(state_dir)
    with (
        RedisServer(state_dir / "redis") as redis,
        FerretDBServer(state_dir / "ferretdb") as mongo,
    ):
        print(f"[server] redis   {redis.url}", file=sys.stderr, flush=True)
        print(f"[server] mongodb {mongo.url}", file=sys.stderr, flush=True)
        print(
            f"[server] chat    http://{host}:{port}  (REST /api/v1, WebSocket /ws, "
            f"/docs, /metrics); Ctrl-C stops\n"
            f"[server] open http://{host}:{port}/app/  (the web client)",
            file=sys.stderr,
            flush=True,
        )
        chat = subprocess.Popen(
            [sys.executable, "-m", "chatserver"],
            cwd=REPO_ROOT,
            env=server_env(redis.url, mongo.url, secret, host, port),
        )

        def forward(signum: int, _: FrameType | None) -> None:
            # Ctrl-C reaches the whole process group; a SIGTERM drains the chat server.
            if chat.poll() is None:
                chat.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGTERM, forward)
        return chat.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default=LOOPBACK, help="listen address (default %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="listen port (default %(default)s)")
    parser.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="data directory (kept)"
    )
    parser.add_argument("--ephemeral", action="store_true", help="use a temporary data directory")
    args = parser.parse_args(argv)
    if args.ephemeral:
        with tempfile.TemporaryDirectory(prefix="hypersend-server-") as tmp:
            raise SystemExit(run(Path(tmp), args.host, args.port))
    raise SystemExit(run(args.state_dir, args.host, args.port))


if __name__ == "__main__":
    main()
