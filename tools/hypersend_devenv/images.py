"""Hypersend's container images, built without Docker and cached by content.

    python -m hypersend_devenv.images build [NAME ...]   build what is missing (default: all)
    python -m hypersend_devenv.images list               references, keys, archives, build times

One naming scheme, versioned from one place (the project version in pyproject.toml):

    ghcr.io/hypersend/chatserver:<version>      Dockerfile.server
    ghcr.io/hypersend/operator:<version>        Dockerfile.operator
    localhost/hypersend/redis:7.0-bookworm      Debian's redis-server (dev-only datastore)
    localhost/hypersend/ferretdb:v1.24.2        FerretDB on SQLite with a mongod entry point
    localhost/hypersend/pause:<version>         the node's sandbox image (containerd sandbox_image)

The two Dockerfiles are the files a registry build uses, unchanged: their base image is the build
argument BASE_IMAGE (default python:3.11-slim-bookworm). Here it is
localhost/hypersend/python-base@<its manifest digest>, a bookworm root filesystem with Debian's
python3 made by mmdebstrap (tagged with its key). buildah builds with vfs storage and chroot
isolation under ~/.cache/hypersend/buildah (never /var/lib/containers); RUN steps reach PyPI and
trust the host's CA bundle (bind-mounted for the build only, never part of an image).

Each image ends as a docker-archive (what `ctr -n k8s.io images import` reads) at
~/.cache/hypersend/images/<name>-<key>.tar. The key hashes every input: the Dockerfile and every
build-context file its COPY lines name, the base image's key, the mmdebstrap recipe with the
candidate versions of its main Debian packages (from the host's apt lists: cheap, and a Debian
update moves it), the Go sources and versions of the static programs. An archive that exists is
not rebuilt, so a rerun with unchanged inputs costs a few hashes. The three most recently used
archives of each image stay (worktrees of one clone share the cache).

The node imports them with import_into_containerd(address, ensure_images(log)); SANDBOX_IMAGE is
containerd's sandbox_image.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hypersend_devenv import build, versions

Log = Callable[[str], None]

REPO_ROOT = build.TOOLS_DIR.parent
IMAGES_DIR = build.CACHE_ROOT / "images"
BUILDAH_DIR = build.CACHE_ROOT / "buildah"


def project_version(pyproject: Path = REPO_ROOT / "pyproject.toml") -> str:
    """The one version every Hypersend image tag derives from."""
    return str(tomllib.loads(pyproject.read_text())["project"]["version"])


VERSION = project_version()
REGISTRY = "ghcr.io/hypersend"
LOCAL = "localhost/hypersend"
SERVER_REPOSITORY = f"{REGISTRY}/chatserver"
OPERATOR_REPOSITORY = f"{REGISTRY}/operator"
SERVER_IMAGE = f"{SERVER_REPOSITORY}:{VERSION}"
OPERATOR_IMAGE = f"{OPERATOR_REPOSITORY}:{VERSION}"
REDIS_IMAGE = f"{LOCAL}/redis:{versions.DEBIAN_REDIS}-{versions.DEBIAN_SUITE}"
FERRETDB_IMAGE = f"{LOCAL}/ferretdb:{versions.FERRETDB}"
# containerd's sandbox_image: the node runs every pod's sandbox from it and never pulls one.
SANDBOX_IMAGE = f"{LOCAL}/pause:{VERSION}"
PROMETHEUS_IMAGE = f"{LOCAL}/prometheus:{build.prometheus_release(versions.PROMETHEUS)}"
PROMETHEUS_ADAPTER_IMAGE = f"{LOCAL}/prometheus-adapter:{versions.PROMETHEUS_ADAPTER}"
METRICS_SERVER_IMAGE = f"{LOCAL}/metrics-server:{versions.METRICS_SERVER}"
NOBODY = 65534
BASE_REPOSITORY = f"{LOCAL}/python-base"
# What the Dockerfiles' builder and final stages run in when built here.
DEBIAN_MIRRORS = (
    f"deb http://deb.debian.org/debian {versions.DEBIAN_SUITE} main",
    f"deb http://deb.debian.org/debian {versions.DEBIAN_SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {versions.DEBIAN_SUITE}-security main",
)
# Documentation, manuals and translations stay out; licences (copyright files) stay in.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
)
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
GOMOD = build.GOMOD_TEMPLATES


def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def tree_digest(root: Path, files: list[Path]) -> str:
    """Names (relative to root), contents and the executable bit of `files`."""
    h = hashlib.sha256()
    for path in sorted(files):
        rel = path.relative_to(root).as_posix()
        mode = "x" if os.access(path, os.X_OK) else "-"
        h.update(f"{rel}\0{mode}\0{digest(path.read_bytes())}\n".encode())
    return h.hexdigest()


def source_files(directory: Path) -> list[Path]:
    skip_dirs = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
    out: list[Path] = []
    for path in directory.rglob("*"):
        parts = set(path.relative_to(directory).parts)
        if path.is_file() and not skip_dirs & parts and path.suffix not in {".pyc", ".pyo"}:
            out.append(path)
    return out


# --- the static Go programs (built like the rest of the test infrastructure) -------------------


def _gomod_key(name: str, recipe: str = "") -> str:
    directory = GOMOD / name
    return digest(tree_digest(directory, source_files(directory)), recipe)[:12]


# FerretDB's own command reads build/version/version.txt, which the published module lacks (its
# task runner generates it), and panics without it; the build works on a copy of the module with
# that file written (a `replace` to the copy). The recipe string is part of the part's version.
FERRETDB_SOURCE_RECIPE = f"replace with a copy + build/version/version.txt = {versions.FERRETDB}"
PAUSE = build.Part("pause", f"{VERSION}-{_gomod_key('pause')}", ("pause",))
# FerretDB's own command (SCRAM authentication, initial user) plus the mongod-style entry point.
FERRETDB_SERVER = build.Part(
    "ferretdb-server",
    f"{versions.FERRETDB}-{_gomod_key('ferretdb-server', FERRETDB_SOURCE_RECIPE)}",
    ("ferretdb", "mongod-ferretdb"),
)


def build_pause() -> None:
    build.GoBuild(
        part=PAUSE,
        module="hypersend.io/tools/pause",
        requires={},
        packages={"pause": "."},
        ldflags=f"-X main.version={VERSION}",
        template=GOMOD / "pause",
    ).run()


def module_dir(module: str, version: str) -> Path:
    """The module's source in the Go module cache (downloaded through the proxy if missing)."""
    build.CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    out = run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        env=build.go_env(),
        cwd=build.CACHE_ROOT,
    )
    return Path(json.loads(out)["Dir"])


def build_ferretdb_server() -> None:
    template = build.CACHE_ROOT / "build" / f"{FERRETDB_SERVER.name}-template"
    if template.exists():
        shutil.rmtree(template)
    shutil.copytree(GOMOD / "ferretdb-server", template)
    source = template / "ferretdb-src"
    shutil.copytree(module_dir("github.com/FerretDB/FerretDB", versions.FERRETDB), source)
    for path in [source, *source.rglob("*")]:  # the module cache is read-only
        path.chmod(0o755 if path.is_dir() else 0o644)
    (source / "build" / "version" / "version.txt").write_text(versions.FERRETDB + "\n")
    (source / "build" / "version" / "package.txt").write_text("hypersend-local\n")
    try:
        build.GoBuild(
            part=FERRETDB_SERVER,
            module="hypersend.io/tools/ferretdbserver",
            requires={"github.com/FerretDB/FerretDB": versions.FERRETDB},
            replaces={"github.com/FerretDB/FerretDB": "./ferretdb-src"},
            packages={
                "ferretdb": "github.com/FerretDB/FerretDB/cmd/ferretdb",
                "mongod-ferretdb": "./mongod",
            },
            template=template,
        ).run()
    finally:
        shutil.rmtree(template, ignore_errors=True)


def ensure_part(part: build.Part, builder: Callable[[], None], log: Log) -> None:
    if part.is_built():
        return
    log(f"building {part.name} {part.version} (Go)")
    builder()
    # These parts are versioned by their sources: an older build is never used again.
    for old in build.CACHE_ROOT.glob(f"{part.name}-*"):
        if old != part.root and (old / "stamp.json").exists():
            shutil.rmtree(old, ignore_errors=True)


# --- buildah -------------------------------------------------------------------------------------


class BuildError(RuntimeError):
    pass


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, env=env, cwd=cwd, text=True, capture_output=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise BuildError(f"{shlex.join(cmd)} exited {proc.returncode}:\n{tail}")
    return proc.stdout


class Buildah:
    """buildah with its own storage (vfs) and configuration, all under the cache directory.

    containers.conf points the CNI configuration directory (buildah writes a lock file there at
    start) into the cache as well, so the host's /etc/cni is never created.
    """

    def __init__(self, root: Path = BUILDAH_DIR) -> None:
        self.root = root
        for sub in ("storage", "run", "tmp", "cni"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.conf = root / "containers.conf"
        text = f'[network]\nnetwork_config_dir = "{root / "cni"}"\n'
        if not self.conf.exists() or self.conf.read_text() != text:
            self.conf.write_text(text)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            CONTAINERS_CONF=str(self.conf),
            TMPDIR=str(self.root / "tmp"),
            BUILDAH_ISOLATION="chroot",
            STORAGE_DRIVER="vfs",
        )
        return env

    def argv(self, *args: str) -> list[str]:
        # containers/image keeps a blob-info cache in /var/lib/containers/cache for root whatever
        # the storage root: buildah runs in a private mount namespace with a tmpfs on /var/lib,
        # so that directory is never created on the host (and the cache is just not kept).
        private_var_lib = 'mount -t tmpfs -o size=64m hypersend-var-lib /var/lib && exec "$@"'
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            private_var_lib,
            "sh",
            "buildah",
            "--root",
            str(self.root / "storage"),
            "--runroot",
            str(self.root / "run"),
            "--storage-driver",
            "vfs",
            *args,
        ]

    def __call__(self, *args: str) -> str:
        return run(self.argv(*args), env=self.env()).strip()

    def has_image(self, ref: str) -> bool:
        proc = subprocess.run(
            self.argv("inspect", "--type", "image", ref),
            env=self.env(),
            capture_output=True,
            check=False,
        )
        return proc.returncode == 0

    def pinned(self, ref: str) -> str:
        """`ref` by the digest of its manifest (`repository@sha256:...`): what a FROM line
        then gets can only be that image, whatever the tag points at later."""
        digest = self("inspect", "--type", "image", "--format", "{{.FromImageDigest}}", ref)
        if not digest.startswith("sha256:"):
            raise BuildError(f"{ref}: no manifest digest ({digest!r})")
        return f"{ref.rsplit(':', 1)[0]}@{digest}"

    def image_config(self, ref: str) -> dict[str, object]:
        """The OCI image configuration's `config` block (User, Entrypoint, Cmd, Env, ...)."""
        out = json.loads(self("inspect", "--type", "image", ref))
        config = out["OCIv1"].get("config", {})
        return dict(config)

    @contextlib.contextmanager
    def container(self, image: str) -> Iterator[str]:
        name = self("from", "--pull=never", "--quiet", image)
        try:
            yield name
        finally:
            subprocess.run(self.argv("rm", name), env=self.env(), capture_output=True, check=False)

    def run_in(self, image: str, *cmd: str, user: str | None = None) -> str:
        """Run `cmd` in a throwaway container of `image` (chroot isolation); its stdout."""
        with self.container(image) as ctr:
            extra = ["--user", user] if user else []
            return self("run", "--isolation", "chroot", *extra, ctr, "--", *cmd)


@contextlib.contextmanager
def host_left_as_found() -> Iterator[None]:
    """containers/image keeps a blob-info cache under /var/lib/containers/cache for root whatever
    the storage root is; remove that directory afterwards when it was not there before."""
    var_lib = Path("/var/lib/containers")
    existed = var_lib.exists()
    try:
        yield
    finally:
        if not existed and var_lib.exists():
            shutil.rmtree(var_lib, ignore_errors=True)


@contextlib.contextmanager
def images_lock() -> Iterator[None]:
    """One builder at a time (`./dev up` and a test run may both ask for the images)."""
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    with (IMAGES_DIR / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- image recipes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageArchive:
    """A built image: its reference and the docker-archive that `ctr images import` reads."""

    name: str
    ref: str
    key: str
    archive: Path


# Content keys, computed once per ensure_images() call (inputs are hashed, not watched).
_KEYS: dict[str, str] = {}


@dataclass
class ImageSpec:
    """One image: what goes into its key, how to make it, how to check that it runs."""

    name: str
    deps: tuple[ImageSpec, ...] = field(default=(), kw_only=True)

    def ref(self) -> str:
        raise NotImplementedError

    def inputs(self) -> dict[str, str]:
        raise NotImplementedError

    def make(self, buildah: Buildah, ref: str, log: Log) -> None:
        raise NotImplementedError

    def check(self, buildah: Buildah, ref: str) -> None:
        raise NotImplementedError

    def key(self) -> str:
        if self.name not in _KEYS:
            inputs = self.inputs()
            for dep in self.deps:
                inputs[f"image:{dep.name}"] = dep.key()
            _KEYS[self.name] = digest(json.dumps(inputs, sort_keys=True))[:16]
        return _KEYS[self.name]

    def archive(self) -> Path:
        return IMAGES_DIR / f"{self.name}-{self.key()}.tar"


def cached_probe(name: str, signature: str, probe: Callable[[], str]) -> str:
    """`probe()`, remembered in the images directory while `signature` stays the same (so an
    unchanged rerun runs neither apt-cache, which takes seconds, nor mmdebstrap)."""
    path = IMAGES_DIR / "probes.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    entry = known.get(name)
    if isinstance(entry, dict) and entry.get("signature") == signature:
        return str(entry["value"])
    value = probe()
    known[name] = {"signature": signature, "value": value}
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
    tmp.replace(path)
    return value


def stat_signature(paths: list[Path]) -> str:
    parts = []
    for path in sorted(paths):
        with contextlib.suppress(OSError):
            st = path.stat()
            parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
    return digest("\n".join(parts))


def apt_candidates(packages: tuple[str, ...]) -> dict[str, str]:
    """The versions apt would install now, from the host's package lists (a bookworm host)."""

    def probe() -> str:
        out = run(["apt-cache", "policy", *packages], env={**os.environ, "LC_ALL": "C"})
        found: dict[str, str] = {}
        current = ""
        for line in out.splitlines():
            if line and not line.startswith(" "):
                current = line.rstrip(":")
            elif line.strip().startswith("Candidate:"):
                found[current] = line.split(":", 1)[1].strip()
        return json.dumps({p: found.get(p, "(unknown)") for p in packages})

    lists = [*Path("/var/lib/apt/lists").glob("*"), Path("/etc/apt/preferences")]
    versions_json = cached_probe(f"apt:{','.join(packages)}", stat_signature(lists), probe)
    return dict(json.loads(versions_json))


def mmdebstrap_version() -> str:
    path = shutil.which("mmdebstrap")
    if path is None:
        raise BuildError("mmdebstrap is not installed (./dev setup installs it)")
    return cached_probe(
        "mmdebstrap",
        stat_signature([Path(path)]),
        lambda: run(["mmdebstrap", "--version"]).strip(),
    )


@dataclass
class DebianImage(ImageSpec):
    """A minbase root filesystem of Debian packages (mmdebstrap), committed as an image."""

    repository: str = ""
    tag: str | None = None  # None: the content key
    packages: tuple[str, ...] = ()
    versioned: tuple[str, ...] = ()  # packages whose candidate version goes into the key
    config: tuple[str, ...] = ()  # `buildah config` arguments
    directories: tuple[tuple[str, int, int], ...] = ()  # (path, uid, mode) created in the rootfs
    smoke: tuple[str, ...] = ()  # a command that must run in the image
    expect: str = ""  # and print this

    def ref(self) -> str:
        return f"{self.repository}:{self.tag or self.key()}"

    def inputs(self) -> dict[str, str]:
        mmdebstrap = mmdebstrap_version()
        return {
            "recipe": json.dumps(
                [
                    mmdebstrap,
                    versions.DEBIAN_SUITE,
                    DEBIAN_MIRRORS,
                    DPKG_OPTIONS,
                    self.packages,
                    self.config,
                    self.directories,
                ]
            ),
            "apt": json.dumps(apt_candidates(self.versioned)),
        }

    def make(self, buildah: Buildah, ref: str, log: Log) -> None:
        if os.geteuid() != 0:
            raise BuildError("mmdebstrap --mode=root needs root")
        with tempfile.TemporaryDirectory(dir=buildah.root / "tmp") as tmp:
            rootfs = Path(tmp) / "rootfs.tar"
            cmd = [
                "mmdebstrap",
                "--variant=minbase",
                "--mode=root",
                "--format=tar",
                '--aptopt=Acquire::Languages "none"',
                f"--include={','.join(self.packages)}",
                *[f"--dpkgopt={opt}" for opt in DPKG_OPTIONS],
                versions.DEBIAN_SUITE,
                str(rootfs),
                *DEBIAN_MIRRORS,
            ]
            log(f"{self.name}: mmdebstrap {versions.DEBIAN_SUITE} +{','.join(self.packages)}")
            run(cmd, env={**buildah.env(), "LC_ALL": "C.UTF-8"})
            ctr = buildah("from", "--quiet", "scratch")
            try:
                mnt = Path(buildah("mount", ctr))
                # Device nodes in /dev come from the runtime, not the image.
                run(
                    [
                        "tar",
                        "--exclude=./dev/*",
                        "--numeric-owner",
                        "-C",
                        str(mnt),
                        "-xpf",
                        str(rootfs),
                    ]
                )
                for path, uid, mode in self.directories:
                    target = mnt / path.lstrip("/")
                    target.mkdir(parents=True, exist_ok=True)
                    os.chown(target, uid, uid)
                    target.chmod(mode)
                buildah("umount", ctr)
                buildah("config", "--env", PATH_ENV, "--env", "LANG=C.UTF-8", *self.config, ctr)
                buildah("commit", "--quiet", "--rm", ctr, ref)
            except BaseException:
                subprocess.run(buildah.argv("rm", ctr), env=buildah.env(), capture_output=True)
                raise

    def check(self, buildah: Buildah, ref: str) -> None:
        if not self.smoke:
            return
        out = buildah.run_in(ref, *self.smoke)
        if self.expect not in out:
            raise BuildError(
                f"{ref}: {shlex.join(self.smoke)} printed {out!r}, not {self.expect!r}"
            )


def copy_sources(dockerfile_text: str) -> list[str]:
    """The build-context paths the Dockerfile's COPY/ADD lines read (not --from= copies)."""
    sources: list[str] = []
    logical = dockerfile_text.replace("\\\n", " ")
    for line in logical.splitlines():
        words = shlex.split(line, comments=True) if line.strip() else []
        if len(words) < 3 or words[0].upper() not in {"COPY", "ADD"}:
            continue
        if any(w.startswith("--from") for w in words[1:]):
            continue
        sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


@dataclass
class DockerfileImage(ImageSpec):
    """One of the repository's Dockerfiles, built by buildah over the local base image."""

    dockerfile: str = ""
    ref_: str = ""
    smokes: tuple[tuple[tuple[str, ...], str], ...] = ()  # (command, expected output)

    @property
    def base(self) -> DebianImage:
        base = self.deps[0]
        assert isinstance(base, DebianImage)
        return base

    def ref(self) -> str:
        return self.ref_

    def context_files(self) -> list[Path]:
        files: list[Path] = []
        for source in copy_sources((REPO_ROOT / self.dockerfile).read_text()):
            path = REPO_ROOT / source
            if path.is_dir():
                files += source_files(path)
            elif path.is_file():
                files.append(path)
            else:
                raise BuildError(f"{self.dockerfile}: COPY source {source} does not exist")
        return files

    def inputs(self) -> dict[str, str]:
        return {
            "dockerfile": digest((REPO_ROOT / self.dockerfile).read_bytes()),
            "context": tree_digest(REPO_ROOT, self.context_files()),
            "ref": self.ref_,
        }

    def make(self, buildah: Buildah, ref: str, log: Log) -> None:
        with tempfile.TemporaryDirectory(dir=buildah.root / "tmp") as tmp:
            context = Path(tmp) / "context"
            for path in self.context_files():
                dest = context / path.relative_to(REPO_ROOT)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)
            dockerfile = Path(tmp) / self.dockerfile
            shutil.copy2(REPO_ROOT / self.dockerfile, dockerfile)
            base = buildah.pinned(self.base.ref())
            args = [
                "bud",
                "--isolation",
                "chroot",
                "--pull=never",
                "--layers=false",
                "--build-arg",
                f"BASE_IMAGE={base}",
                "-f",
                str(dockerfile),
                "-t",
                ref,
            ]
            if HOST_CA_BUNDLE.exists():
                # pip in RUN steps trusts what the host trusts (a proxy's CA, for one); a bind
                # mount exists only while the step runs, so no image carries it.
                args += ["--volume", f"{HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro"]
            log(f"{self.name}: buildah bud {self.dockerfile} (BASE_IMAGE={base})")
            buildah(*args, str(context))

    def check(self, buildah: Buildah, ref: str) -> None:
        for cmd, expected in self.smokes:
            out = buildah.run_in(ref, *cmd)
            if expected not in out:
                raise BuildError(f"{ref}: {shlex.join(cmd)} printed {out[-2000:]!r}")


@dataclass
class ScratchImage(ImageSpec):
    """Static binaries in an empty (`FROM scratch`) image."""

    ref_: str = ""
    part: build.Part | None = None
    builder: Callable[[], None] | None = None
    binaries: tuple[tuple[str, str], ...] = ()  # (binary in the part, path in the image)
    directories: tuple[tuple[str, int, int], ...] = ()
    config: tuple[str, ...] = ()
    smoke: tuple[str, ...] = ()
    expect: str = ""
    smoke_status: int = 0  # the smoke command's exit status (pflag commands end --help with 2)

    def ref(self) -> str:
        return self.ref_

    def inputs(self) -> dict[str, str]:
        assert self.part is not None
        return {
            "part": f"{self.part.name}-{self.part.version}",
            "go": run(["go", "env", "GOVERSION"]).strip(),
            "layout": json.dumps([self.binaries, self.directories, self.config, self.ref_]),
        }

    def make(self, buildah: Buildah, ref: str, log: Log) -> None:
        assert self.part is not None
        assert self.builder is not None
        ensure_part(self.part, self.builder, log)
        log(f"{self.name}: FROM scratch + {', '.join(b for b, _ in self.binaries)}")
        ctr = buildah("from", "--quiet", "scratch")
        try:
            mnt = Path(buildah("mount", ctr))
            for binary, dest in self.binaries:
                target = mnt / dest.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.part.path(binary), target)
                target.chmod(0o755)
            for path, uid, mode in self.directories:
                target = mnt / path.lstrip("/")
                target.mkdir(parents=True, exist_ok=True)
                os.chown(target, uid, uid)
                target.chmod(mode)
            buildah("umount", ctr)
            buildah("config", *self.config, ctr)
            buildah("commit", "--quiet", "--rm", ctr, ref)
        except BaseException:
            subprocess.run(buildah.argv("rm", ctr), env=buildah.env(), capture_output=True)
            raise

    def check(self, buildah: Buildah, ref: str) -> None:
        with buildah.container(ref) as ctr:
            argv = buildah.argv("run", "--isolation", "chroot", ctr, "--", *self.smoke)
            proc = subprocess.run(argv, env=buildah.env(), capture_output=True, text=True)
        out = proc.stdout + proc.stderr
        if proc.returncode != self.smoke_status or self.expect not in out:
            raise BuildError(
                f"{ref}: {shlex.join(self.smoke)} exited {proc.returncode}, printed {out[-500:]!r}"
            )


PYTHON_BASE = DebianImage(
    "python-base",
    repository=BASE_REPOSITORY,
    # What the Dockerfiles need of python:3.11-slim-bookworm: `python`, venv with pip, CA roots.
    packages=("python3", "python3-venv", "python-is-python3", "ca-certificates"),
    versioned=("python3.11", "python3-venv", "ca-certificates", "libc6", "libssl3"),
    config=("--cmd", '["python3"]'),
    smoke=("python", "-c", "import ssl, venv, sys; print(sys.version)"),
    expect="3.11.",
)
SERVER = DockerfileImage(
    "chatserver",
    deps=(PYTHON_BASE,),
    dockerfile="Dockerfile.server",
    ref_=SERVER_IMAGE,
    smokes=(
        (
            (
                "python",
                "-c",
                "import chatserver.app, importlib.util as u; "
                "print('pip' if u.find_spec('pip') else 'no-pip')",
            ),
            "no-pip",
        ),
    ),
)
OPERATOR = DockerfileImage(
    "operator",
    deps=(PYTHON_BASE,),
    dockerfile="Dockerfile.operator",
    ref_=OPERATOR_IMAGE,
    smokes=((("hypersend-operator", "--help"), "--all-namespaces"),),
)
REDIS_UID = 999  # the operator runs its Redis pod as this UID (builders/redis.py)
REDIS = DebianImage(
    "redis",
    repository=REDIS_IMAGE.rsplit(":", 1)[0],
    tag=REDIS_IMAGE.rsplit(":", 1)[1],
    packages=("redis-server",),
    versioned=("redis-server", "redis-tools", "libc6"),
    config=(
        "--user",
        f"{REDIS_UID}:{REDIS_UID}",
        "--workingdir",
        "/data",
        "--port",
        "6379",
        "--cmd",
        '["redis-server", "--protected-mode", "no"]',
    ),
    directories=(("/data", REDIS_UID, 0o755),),
    smoke=("redis-server", "--version"),
    expect=f"v={versions.DEBIAN_REDIS}.",
)
MONGO_UID = 999  # the operator runs its MongoDB StatefulSet as this UID (builders/mongo.py)
FERRETDB = ScratchImage(
    "ferretdb",
    ref_=FERRETDB_IMAGE,
    part=FERRETDB_SERVER,
    builder=build_ferretdb_server,
    binaries=(
        ("ferretdb", "/usr/local/bin/ferretdb"),
        ("mongod-ferretdb", "/usr/local/bin/mongod-ferretdb"),
    ),
    directories=(("/data/db", MONGO_UID, 0o755), ("/tmp", 0, 0o1777)),
    config=(
        "--env",
        PATH_ENV,
        "--user",
        f"{MONGO_UID}:{MONGO_UID}",
        "--workingdir",
        "/data/db",
        "--port",
        "27017",
        "--entrypoint",
        '["/usr/local/bin/mongod-ferretdb"]',
        "--cmd",
        '["mongod", "--bind_ip_all"]',
    ),
    smoke=("/usr/local/bin/ferretdb", "--version"),
    expect="version:",
)
PAUSE_IMAGE = ScratchImage(
    "pause",
    ref_=SANDBOX_IMAGE,
    part=PAUSE,
    builder=build_pause,
    binaries=(("pause", "/pause"),),
    # 65535: the UID upstream's pause image runs as.
    config=("--user", "65535:65535", "--entrypoint", '["/pause"]', "--cmd", "[]"),
    smoke=("/pause", "-v"),
    expect=f"pause {VERSION}",
)
# The metric path's pods (tools/hypersend_devenv/metrics.py): Prometheus and the two metrics API
# servers, each built from its Go module.
PROMETHEUS = ScratchImage(
    "prometheus",
    ref_=PROMETHEUS_IMAGE,
    part=build.PROMETHEUS,
    builder=build.build_prometheus,
    binaries=(("prometheus", "/bin/prometheus"),),
    # /prometheus: the TSDB's default path, writable by the user the pod runs as.
    directories=(("/prometheus", NOBODY, 0o775),),
    config=(
        "--user",
        f"{NOBODY}:{NOBODY}",
        "--workingdir",
        "/prometheus",
        "--entrypoint",
        '["/bin/prometheus"]',
        "--cmd",
        "[]",
    ),
    smoke=("/bin/prometheus", "--version"),
    expect=f"prometheus, version {build.prometheus_release(versions.PROMETHEUS)} ",
)
PROMETHEUS_ADAPTER = ScratchImage(
    "prometheus-adapter",
    ref_=PROMETHEUS_ADAPTER_IMAGE,
    part=build.PROMETHEUS_ADAPTER,
    builder=build.build_prometheus_adapter,
    binaries=(("adapter", "/adapter"),),
    config=("--user", f"{NOBODY}:{NOBODY}", "--entrypoint", '["/adapter"]', "--cmd", "[]"),
    smoke=("/adapter", "--help"),
    expect="--prometheus-url",
    smoke_status=2,
)
METRICS_SERVER = ScratchImage(
    "metrics-server",
    ref_=METRICS_SERVER_IMAGE,
    part=build.METRICS_SERVER,
    builder=build.build_metrics_server,
    binaries=(("metrics-server", "/metrics-server"),),
    config=("--user", f"{NOBODY}:{NOBODY}", "--entrypoint", '["/metrics-server"]', "--cmd", "[]"),
    smoke=("/metrics-server", "--help"),
    expect="--kubelet-preferred-address-types",
)
# What the node imports, in this order; the base image is only an input of the Dockerfiles.
IMAGES: dict[str, ImageSpec] = {
    spec.name: spec
    for spec in (
        SERVER,
        OPERATOR,
        REDIS,
        FERRETDB,
        PAUSE_IMAGE,
        PROMETHEUS,
        PROMETHEUS_ADAPTER,
        METRICS_SERVER,
    )
}
ALL: dict[str, ImageSpec] = {PYTHON_BASE.name: PYTHON_BASE, **IMAGES}


# --- building ------------------------------------------------------------------------------------


def metadata_path(archive: Path) -> Path:
    return archive.with_suffix(".json")


def _ensure(spec: ImageSpec, buildah: Buildah, log: Log, *, in_storage: bool) -> ImageArchive:
    key = spec.key()
    ref = spec.ref()
    archive = spec.archive()
    result = ImageArchive(spec.name, ref, key, archive)
    if archive.exists() and metadata_path(archive).exists():
        os.utime(metadata_path(archive))  # last used: what _prune keeps
        if in_storage and not buildah.has_image(ref):
            log(f"{spec.name}: loading {archive.name} into buildah's storage")
            buildah("pull", "--quiet", f"docker-archive:{archive}")
        return result
    for dep in spec.deps:
        _ensure(dep, buildah, log, in_storage=True)
    started = time.monotonic()
    spec.make(buildah, ref, log)
    spec.check(buildah, ref)
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    buildah("push", "--quiet", ref, f"docker-archive:{partial}:{ref}")
    seconds = round(time.monotonic() - started, 1)
    meta = {"ref": ref, "key": key, "inputs": spec.inputs(), "build_seconds": seconds}
    metadata_path(archive).write_text(json.dumps(meta, indent=1))
    partial.rename(archive)
    log(f"{spec.name}: {ref} built in {seconds}s -> {archive}")
    _prune(spec, buildah)
    return result


# Archives kept per image: worktrees of one clone share the cache and may need different keys.
KEEP_PER_IMAGE = 3


def _prune(spec: ImageSpec, buildah: Buildah) -> None:
    """Beyond the KEEP_PER_IMAGE most recently used archives of this image (use is recorded as
    the metadata file's mtime), archives go; so do images left untagged in buildah's storage."""
    prefix = f"{spec.name}-"
    archives = [
        a
        for a in IMAGES_DIR.glob(f"{prefix}*.tar")
        if "-" not in a.stem.removeprefix(prefix) and metadata_path(a).exists()
    ]
    archives.sort(key=lambda a: metadata_path(a).stat().st_mtime, reverse=True)
    for old in archives[KEEP_PER_IMAGE:]:
        old.unlink(missing_ok=True)
        metadata_path(old).unlink(missing_ok=True)
    if spec is PYTHON_BASE:
        kept = {
            f"{BASE_REPOSITORY}:{a.stem.removeprefix(prefix)}" for a in archives[:KEEP_PER_IMAGE]
        }
        for line in buildah("images", "--noheading", "--format", "{{.Name}}:{{.Tag}}").split():
            if line.startswith(f"{BASE_REPOSITORY}:") and line not in kept:
                subprocess.run(buildah.argv("rmi", line), env=buildah.env(), capture_output=True)
    subprocess.run(buildah.argv("rmi", "--prune"), env=buildah.env(), capture_output=True)


def ensure_images(log: Log = print, names: list[str] | None = None) -> list[ImageArchive]:
    """Every image the local node runs, built when its inputs changed; their archives.

    Import each with `ctr --address <sock> -n k8s.io images import <archive>`; the images keep
    the references the examples and the chart name (and SANDBOX_IMAGE for containerd).
    """
    wanted = [ALL[n] for n in (names or list(IMAGES))]
    _KEYS.clear()
    with images_lock(), host_left_as_found():
        buildah = Buildah()
        return [_ensure(spec, buildah, log, in_storage=False) for spec in wanted]


KEY_LABEL = "hypersend.io/content-key"


def import_into_containerd(
    address: str, archives: list[ImageArchive], log: Log = print, namespace: str = "k8s.io"
) -> list[str]:
    """`ctr images import` each archive into the containerd at `address` unless that image is
    already there from the same archive (a label records the content key); the refs imported."""
    ctr = ["ctr", "--address", address, "--namespace", namespace]
    imported: list[str] = []
    for image in archives:
        rows = run([*ctr, "images", "ls", f"name=={image.ref}"]).splitlines()[1:]
        if any(f"{KEY_LABEL}={image.key}" in row for row in rows):
            continue
        started = time.monotonic()
        run([*ctr, "images", "import", str(image.archive)])
        run([*ctr, "images", "label", image.ref, f"{KEY_LABEL}={image.key}"])
        log(f"{image.name}: imported {image.ref} in {time.monotonic() - started:.1f}s")
        imported.append(image.ref)
    return imported


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help="build the images whose inputs changed")
    build_cmd.add_argument("names", nargs="*", help=f"images (default: {list(IMAGES)})")
    build_cmd.add_argument("--force", action="store_true", help="rebuild even when cached")
    sub.add_parser("list", help="references, keys, archives and build times")
    args = parser.parse_args(argv)
    if args.command == "list":
        for spec in ALL.values():
            archive = spec.archive()
            if archive.exists():
                meta = json.loads(metadata_path(archive).read_text())
                size = archive.stat().st_size >> 20
                state = f"{archive} ({size} MiB, built in {meta['build_seconds']}s)"
            else:
                state = f"not built ({archive.name})"
            print(f"{spec.name:12} {spec.ref():52} {state}")
        return
    unknown = sorted(set(args.names) - set(ALL))
    if unknown:
        parser.error(f"unknown image(s) {unknown}; choose from {list(ALL)}")
    if args.force:
        for name in args.names or list(IMAGES):
            ALL[name].archive().unlink(missing_ok=True)
    started = time.monotonic()
    try:
        done = ensure_images(lambda msg: print(f"[images] {msg}", flush=True), args.names or None)
    except BuildError as exc:
        raise SystemExit(f"[images] {exc}") from exc
    for image in done:
        print(f"{image.ref} {image.archive}")
    print(f"[images] {len(done)} image(s) ready in {time.monotonic() - started:.1f}s", flush=True)


if __name__ == "__main__":
    main()
