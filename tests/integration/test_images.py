"""The images, built for real by buildah (hypersend_devenv.images), checked on what they are and
run: the chat server image becomes ready against the Redis and FerretDB images wired the way the
operator wires them (UID 999, the generated root credentials, authSource=admin) and drains on
SIGTERM; the operator image runs its entry points; no pip, compiler or source tree ships.

Built once and cached by content (a rerun with unchanged inputs rebuilds nothing; the first run
takes minutes: mmdebstrap, pip from PyPI, FerretDB's Go build). Containers run with buildah's chroot
isolation, in the host's network namespace, and listen on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pymongo
import pymongo.errors
import pytest
import redis
from hypersend_devenv import images, node

from tests.unit.delivery import dockerfile

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 60


@pytest.fixture(scope="module")
def built() -> dict[str, images.ImageArchive]:
    if os.geteuid() != 0 or shutil.which("buildah") is None or shutil.which("mmdebstrap") is None:
        pytest.fail(
            "the image build needs root, buildah and mmdebstrap (./dev setup installs them)"
        )
    return {a.name: a for a in images.ensure_images(lambda msg: print(f"[images] {msg}"))}


@pytest.fixture(scope="module")
def buildah() -> images.Buildah:
    return images.Buildah()


Exec = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="module")
def in_image(buildah: images.Buildah) -> Iterator[Exec]:
    """Run a command in an image: one working container per image for the whole module (each
    `buildah from` copies the image with vfs), never checked: the test reads the result."""
    containers: dict[str, str] = {}

    def execute(
        ref: str, *cmd: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        if ref not in containers:
            containers[ref] = buildah("from", "--pull=never", "--quiet", ref)
        flags = [f"--env={key}={value}" for key, value in (env or {}).items()]
        return subprocess.run(
            buildah.argv("run", "--isolation", "chroot", *flags, containers[ref], "--", *cmd),
            env=buildah.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    yield execute
    for ctr in containers.values():
        subprocess.run(buildah.argv("rm", ctr), env=buildah.env(), capture_output=True, check=False)


def output(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def archive_tags(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = json.load(member)
    return [tag for entry in manifest for tag in entry["RepoTags"]]


def test_each_archive_carries_the_reference_of_the_naming_scheme(
    built: dict[str, images.ImageArchive], buildah: images.Buildah
) -> None:
    assert {a.ref for a in built.values()} == {
        images.SERVER_IMAGE,
        images.OPERATOR_IMAGE,
        images.REDIS_IMAGE,
        images.FERRETDB_IMAGE,
        images.SANDBOX_IMAGE,
        images.PROMETHEUS_IMAGE,
        images.PROMETHEUS_ADAPTER_IMAGE,
        images.METRICS_SERVER_IMAGE,
    }
    for image in built.values():
        assert image.archive == images.IMAGES_DIR / f"{image.name}-{image.key}.tar"
        # What `ctr images import` will name the image.
        assert archive_tags(image.archive) == [image.ref]
        assert buildah.has_image(image.ref)


def test_a_rerun_with_unchanged_inputs_rebuilds_nothing(
    built: dict[str, images.ImageArchive],
) -> None:
    before = {name: a.archive.stat().st_mtime_ns for name, a in built.items()}
    again = {a.name: a for a in images.ensure_images(lambda msg: None)}
    assert again == built
    assert {name: a.archive.stat().st_mtime_ns for name, a in again.items()} == before


@pytest.mark.parametrize(
    ("name", "dockerfile_name"),
    [("chatserver", "Dockerfile.server"), ("operator", "Dockerfile.operator")],
)
def test_python_images_run_as_10001_with_the_dockerfile_entrypoint(
    built: dict[str, images.ImageArchive],
    buildah: images.Buildah,
    name: str,
    dockerfile_name: str,
    in_image: Exec,
) -> None:
    config = buildah.image_config(built[name].ref)
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == dockerfile.entrypoint((ROOT / dockerfile_name).read_text())
    # Built on the Debian-made base, not on a pulled one.
    probe = "import sys; print(sys.version_info[:2], sys.base_prefix)"
    assert output(in_image(built[name].ref, "python", "-c", probe)).strip() == "(3, 11) /usr"


NOTHING_TO_BUILD_WITH = """
import importlib.util, os, shutil, sys
found = [t for t in ("pip", "pip3", "gcc", "cc", "make", "git") if shutil.which(t)]
found += [m for m in ("pip", "setuptools") if importlib.util.find_spec(m)]
found += [p for p in ("/src", "/opt/hypersend/bin/pip") if os.path.exists(p)]
import {package}
other = importlib.util.find_spec("{absent}") is not None
print("carries:", found, "other extra:", other, "user:", os.getuid(), os.getgid())
"""


@pytest.mark.parametrize(
    ("name", "package", "absent"),
    [("chatserver", "chatserver.app", "kopf"), ("operator", "hypersend_operator", "fastapi")],
)
def test_final_images_carry_no_pip_compiler_or_source_tree(
    built: dict[str, images.ImageArchive], name: str, package: str, absent: str, in_image: Exec
) -> None:
    script = NOTHING_TO_BUILD_WITH.format(package=package, absent=absent)
    out = output(in_image(built[name].ref, "python", "-c", script))
    # Each image also installs only its own extra.
    assert out.strip() == "carries: [] other extra: False user: 10001 10001"


def test_operator_image_runs_its_entry_points(
    built: dict[str, images.ImageArchive], in_image: Exec
) -> None:
    ref = built["operator"].ref
    assert "--all-namespaces" in output(in_image(ref, "hypersend-operator", "--help"))
    # The kubectl plugin ships with the operator's install.
    assert "restart" in output(in_image(ref, "kubectl-hypersend", "--help"))


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            for child in (task / "children").read_text().split():
                found += [int(child), *descendants(int(child))]
    return found


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def signal(self, sig: signal.Signals) -> None:
        """Signal the image's process itself, as the kubelet's runtime does: `buildah run` does
        not forward signals (it kills its child instead)."""
        for pid in descendants(self.proc.pid):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                if not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"buildah"):
                    os.kill(pid, sig)
                    return
        raise AssertionError(f"no workload process under buildah run {self.proc.pid}")


@pytest.fixture
def run_image(buildah: images.Buildah, tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Start an image's process with `buildah run` (chroot isolation); stopped at teardown."""
    started: list[tuple[Running, str]] = []

    def start(
        ref: str, *cmd: str, user: str | None = None, env: dict[str, str] | None = None
    ) -> Running:
        ctr = buildah("from", "--pull=never", "--quiet", ref)
        args = ["run", "--isolation", "chroot"]
        if user:
            args += ["--user", user]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        log = tmp_path / f"{ctr}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                buildah.argv(*args, ctr, "--", *cmd),
                env=buildah.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        running = Running(proc, log)
        started.append((running, ctr))
        return running

    yield start
    for running, ctr in started:
        if running.proc.poll() is None:
            with contextlib.suppress(AssertionError):
                running.signal(signal.SIGTERM)
            try:
                running.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                for pid in descendants(running.proc.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                running.proc.kill()
                running.proc.wait(timeout=10)
        subprocess.run(buildah.argv("rm", ctr), env=buildah.env(), capture_output=True, check=False)


def wait_until(check: Callable[[], bool], running: Running, what: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert running.proc.poll() is None, f"{what} exited:\n{running.output()}"
        try:
            if check():
                return
        except (OSError, redis.RedisError, pymongo.errors.PyMongoError, httpx.TransportError):
            pass
        time.sleep(0.2)
    pytest.fail(f"{what} not up after {STARTUP_SECONDS}s:\n{running.output()}")


@dataclass
class Datastores:
    redis_url: str
    mongo_url: str
    mongo_port: int
    password: str


@pytest.fixture
def datastores(
    built: dict[str, images.ImageArchive], run_image: Callable[..., Running]
) -> Datastores:
    """The Redis and FerretDB images started as the operator's pods start them (UID 999), on
    loopback ports instead of --bind_ip_all (no other address is used here)."""
    redis_port, mongo_port = free_port(), free_port()
    password = secrets.token_urlsafe(18)
    redis_proc = run_image(
        built["redis"].ref,
        "redis-server",
        "--port",
        str(redis_port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        user="999:999",
    )
    # No command: the image's entry point receives the StatefulSet's args.
    config = images.Buildah().image_config(built["ferretdb"].ref)
    assert config["Entrypoint"] == ["/usr/local/bin/mongod-ferretdb"]
    mongo_proc = run_image(
        built["ferretdb"].ref,
        "/usr/local/bin/mongod-ferretdb",
        "mongod",
        "--bind_ip",
        "127.0.0.1",
        "--port",
        str(mongo_port),
        user="999:999",
        env={"MONGO_INITDB_ROOT_USERNAME": "root", "MONGO_INITDB_ROOT_PASSWORD": password},
    )
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    wait_until(lambda: bool(redis.Redis.from_url(redis_url).ping()), redis_proc, "redis image")
    # builders/secrets.py's URL shape.
    mongo_url = f"mongodb://root:{password}@127.0.0.1:{mongo_port}/?authSource=admin"

    def mongo_up() -> bool:
        client: pymongo.MongoClient[dict[str, object]]
        with pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=1000) as client:
            return bool(client.admin.command("ping")["ok"])

    wait_until(mongo_up, mongo_proc, "ferretdb image")
    return Datastores(redis_url, mongo_url, mongo_port, password)


def test_ferretdb_image_makes_the_root_credentials_real(datastores: Datastores) -> None:
    def client(url: str) -> pymongo.MongoClient[dict[str, object]]:
        return pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)

    with client(datastores.mongo_url) as good:
        good["hypersend"]["probe"].insert_one({"_id": 1, "ok": True})
        assert good["hypersend"]["probe"].find_one({"_id": 1}) == {"_id": 1, "ok": True}
    port = datastores.mongo_port
    wrong = f"mongodb://root:not-{datastores.password}@127.0.0.1:{port}/?authSource=admin"
    with (
        client(wrong) as bad,
        pytest.raises(pymongo.errors.OperationFailure, match="uthentication failed"),
    ):
        bad.admin.command("ping")
    with (
        client(f"mongodb://127.0.0.1:{port}/") as anonymous,
        pytest.raises(pymongo.errors.OperationFailure),
    ):
        anonymous["hypersend"]["probe"].find_one({})


def test_ferretdb_entry_point_refuses_options_it_does_not_implement(
    built: dict[str, images.ImageArchive], in_image: Exec
) -> None:
    proc = in_image(built["ferretdb"].ref, "/usr/local/bin/mongod-ferretdb", "mongod", "--fork")
    # 2: the entry point's own refusal (not FerretDB's, not a failed exec). buildah run may drop
    # the output of a process that exits at once, so the exit status is what is checked.
    assert proc.returncode == 2, proc.stdout + proc.stderr


def test_server_image_serves_ready_against_the_datastore_images_and_drains(
    built: dict[str, images.ImageArchive],
    datastores: Datastores,
    run_image: Callable[..., Running],
) -> None:
    port = free_port()
    server = run_image(
        built["chatserver"].ref,
        "hypersend-server",
        env={
            "HYPERSEND_HOST": "127.0.0.1",
            "HYPERSEND_PORT": str(port),
            "HYPERSEND_REDIS_URL": datastores.redis_url,
            "HYPERSEND_MONGO_URL": datastores.mongo_url,
            "HYPERSEND_MONGO_DB": "hypersend",
            "HYPERSEND_JWT_SECRET": secrets.token_urlsafe(40),
            "HYPERSEND_DRAIN_DELAY_SECONDS": "0.1",
            "HYPERSEND_DRAIN_SECONDS": "3",
        },
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(
        lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, server, "server image"
    )
    server.signal(signal.SIGTERM)  # what the kubelet sends: the server drains and exits
    assert server.proc.wait(timeout=30) == 0, server.output()


def test_server_image_refuses_bad_config(
    built: dict[str, images.ImageArchive], in_image: Exec
) -> None:
    proc = in_image(
        built["chatserver"].ref, "hypersend-server", env={"HYPERSEND_JWT_SECRET": "short"}
    )
    # 2: the server's "invalid configuration" exit (see test_ferretdb_entry_point_refuses_... on
    # why the status, not the message, is checked).
    assert proc.returncode == 2, proc.stdout + proc.stderr


def test_pause_image_is_the_static_sandbox(
    built: dict[str, images.ImageArchive], buildah: images.Buildah, in_image: Exec
) -> None:
    ref = built["pause"].ref
    assert ref == images.SANDBOX_IMAGE
    config = buildah.image_config(ref)
    assert config["Entrypoint"] == ["/pause"]
    assert config["User"] == "65535:65535"
    assert output(in_image(ref, "/pause", "-v")).strip() == f"pause {images.VERSION}"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_pause_exits_0_on_termination_signals(sig: signal.Signals) -> None:
    proc = subprocess.Popen([str(images.PAUSE.path("pause"))])
    try:
        # It sleeps: still there after a bounded wait for an early exit.
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_pause_reaps_orphans_as_pid_1() -> None:
    """In a PID namespace of its own, an orphaned grandchild is reparented to pause and reaped."""
    pause = str(images.PAUSE.path("pause"))
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", pause])
    inner = 0
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not inner:
            found = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            inner = int(found[0]) if found else 0
        assert inner, "pause did not start under unshare"
        children = Path(f"/proc/{inner}/task/{inner}/children")
        # A shell that leaves an orphan behind in pause's PID namespace: it becomes pause's child.
        subprocess.run(
            ["nsenter", "--target", str(inner), "--pid", "--", "sh", "-c", "(sleep 2 &) ; exit 0"],
            check=True,
            timeout=10,
        )
        assert children.read_text().split(), "the orphan was not reparented to pause"
        # Once it exits, pause reaps it: no zombie stays behind.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and children.read_text().split():
            time.sleep(0.1)
        left = children.read_text().split()
        assert not left, [Path(f"/proc/{pid}/stat").read_text() for pid in left]
        # As PID 1 it gets only the signals it handles: SIGTERM ends it with 0.
        os.kill(inner, signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            if inner:
                os.kill(inner, signal.SIGKILL)
            proc.kill()
            proc.wait(timeout=10)


CONTAINERD_CONFIG = """version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    # The CRI plugin creates its CNI config directory at start: keep it off the host's /etc/cni.
    conf_dir = "{d}/cni/net.d"
    bin_dir = "{d}/cni/bin"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = "{d}/runc"
      SystemdCgroup = false
"""


@pytest.fixture
def containerd() -> Iterator[str]:
    """A throwaway containerd (own root, state and socket); removed with what it created."""
    if shutil.which("containerd") is None:
        pytest.fail("containerd is not installed (./dev setup installs it)")
    shims = Path("/run/containerd")  # containerd 1.6 puts shim sockets there whatever its state
    shims_existed = shims.exists()
    # `ctr run` puts each task in /<namespace>/<id> of every cgroup hierarchy.
    task_cgroups = [
        Path(m) / "k8s.io" for m in node.cgroup_mounts(Path("/proc/self/mountinfo").read_text())
    ]
    cgroups_existed = {c for c in task_cgroups if c.exists()}
    work = Path(tempfile.mkdtemp(prefix="hs-containerd-"))
    config = work / "config.toml"
    config.write_text(CONTAINERD_CONFIG.format(d=work, sandbox=images.SANDBOX_IMAGE))
    log = (work / "containerd.log").open("wb")
    proc = subprocess.Popen(
        ["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    socket_path = work / "containerd.sock"
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert socket_path.exists(), (work / "containerd.log").read_text()[-3000:]
        yield str(socket_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        for target in sorted((m for m in mounts if m.startswith(str(work))), reverse=True):
            subprocess.run(["umount", target], check=False)
        shutil.rmtree(work, ignore_errors=True)
        if not shims_existed:
            shutil.rmtree(shims, ignore_errors=True)
        for group in task_cgroups:
            if group not in cgroups_existed and group.exists():
                group.rmdir()  # empty once its tasks are gone (ctr run --rm deletes them)


def test_archives_import_into_containerd_once_and_run_there(
    built: dict[str, images.ImageArchive], containerd: str
) -> None:
    archives = list(built.values())
    assert sorted(images.import_into_containerd(containerd, archives, print)) == sorted(
        a.ref for a in archives
    )
    # Imported from the same archives already: nothing to do.
    assert images.import_into_containerd(containerd, archives, print) == []
    ctr = ["ctr", "--address", containerd, "--namespace", "k8s.io"]

    def ctr_run(ref: str, *cmd: str) -> str:
        name = f"hs-{secrets.token_hex(4)}"
        proc = subprocess.run(
            [*ctr, "run", "--rm", ref, name, *cmd],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    # runc runs each as the image's USER.
    probe = "import chatserver.app, os; print(os.getuid())"
    assert ctr_run(images.SERVER_IMAGE, "python", "-c", probe).strip() == "10001"
    assert ctr_run(images.SANDBOX_IMAGE, "/pause", "-v").strip() == f"pause {images.VERSION}"
    assert "v=7.0." in ctr_run(images.REDIS_IMAGE, "redis-server", "--version")

    # The datastore images as the operator runs them: UID 999 (the image's USER), read-only root
    # filesystem, only the data volume writable. Host network namespace, loopback addresses only.
    data = Path(tempfile.mkdtemp(prefix="hs-ctr-data-"))
    try:
        os.chown(data, 999, 999)
        password = secrets.token_urlsafe(12)
        mongo_port, redis_port = free_port(), free_port()
        volume = f"type=bind,src={data},dst=/data/db,options=rbind:rw"
        common = ["--rm", "--net-host", "--read-only"]
        mongo_args = ["mongod", "--bind_ip", "127.0.0.1", "--port", str(mongo_port)]
        servers = {
            "mongo": [
                *["--mount", volume],
                *["--env", "MONGO_INITDB_ROOT_USERNAME=root"],
                *["--env", f"MONGO_INITDB_ROOT_PASSWORD={password}"],
                images.FERRETDB_IMAGE,
                f"hs-mongo-{secrets.token_hex(3)}",
                "/usr/local/bin/mongod-ferretdb",
                *mongo_args,
            ],
            "redis": [
                images.REDIS_IMAGE,
                f"hs-redis-{secrets.token_hex(3)}",
                *["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1"],
                *["--save", "", "--appendonly", "no", "--protected-mode", "no"],
            ],
        }
        procs = {
            name: subprocess.Popen([*ctr, "run", *common, *args], stderr=subprocess.PIPE)
            for name, args in servers.items()
        }
        try:
            url = f"mongodb://root:{password}@127.0.0.1:{mongo_port}/?authSource=admin"
            client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
                url, serverSelectionTimeoutMS=30_000
            )
            with client:
                client["hypersend"]["probe"].insert_one({"_id": 1})
            assert redis.Redis(port=redis_port, socket_connect_timeout=5).ping()
            stat = (data / "hypersend.sqlite").stat()
            assert (stat.st_uid, stat.st_gid) == (999, 999)
        finally:
            for args in servers.values():
                task = next(a for a in args if a.startswith("hs-"))
                subprocess.run([*ctr, "task", "kill", "-s", "SIGTERM", task], check=False)
            for name, proc in procs.items():
                _, err = proc.communicate(timeout=60)
                assert proc.returncode == 0, (name, err)
    finally:
        shutil.rmtree(data, ignore_errors=True)
