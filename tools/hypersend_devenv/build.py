"""Build upstream Go binaries into ~/.cache/hypersend/<part>-<version>/bin, once per version.

Each part is a small Go module generated here (never committed with a go.sum or vendored code):
it requires the upstream module at its pinned version and `go build`s the upstream commands.
A finished build is marked by a stamp file, so a rerun with the cache present costs nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hypersend_devenv import versions

CACHE_ROOT = Path(os.environ.get("HYPERSEND_CACHE", Path.home() / ".cache" / "hypersend"))
TOOLS_DIR = Path(__file__).resolve().parent.parent
GOMOD_TEMPLATES = TOOLS_DIR / "gomod"


@dataclass(frozen=True)
class Part:
    """One cached group of binaries built from one Go module."""

    name: str
    version: str
    binaries: tuple[str, ...]

    @property
    def root(self) -> Path:
        return CACHE_ROOT / f"{self.name}-{self.version}"

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    def path(self, binary: str) -> Path:
        return self.bin_dir / binary

    def is_built(self) -> bool:
        return (self.root / "stamp.json").exists() and all(
            self.path(b).exists() for b in self.binaries
        )


KUBERNETES = Part(
    "kubernetes",
    versions.KUBERNETES,
    (
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubectl",
        # The real node: kubelet runs pods through containerd, kube-proxy makes Services work.
        "kubelet",
        "kube-proxy",
    ),
)
# kwok-stages prints kwok's default Stage objects (a standalone kwok has none without --config).
KWOK = Part("kwok", versions.KWOK, ("kwok", "kwok-stages"))
FERRETDB = Part("ferretdb", versions.FERRETDB, ("ferretdb",))
# The custom-metrics test adapter serves custom.metrics.k8s.io from a host process (HPA tests).
METRICS_ADAPTER = Part("metrics-adapter", versions.CUSTOM_METRICS_APISERVER, ("metrics-adapter",))
HELM = Part("helm", versions.HELM, ("helm",))
# ArgoCD runs health.lua in gopher-lua; tests run it in the same engine.
LUA = Part("gopher-lua", versions.GOPHER_LUA, ("glua",))
# Flux, kpt and cli-utils compute a resource's status with kstatus; tests run the same library.
KSTATUS = Part("kstatus", versions.CLI_UTILS, ("kstatus",))
COREDNS = Part("coredns", versions.COREDNS, ("coredns",))
PROMETHEUS_ADAPTER = Part("prometheus-adapter", versions.PROMETHEUS_ADAPTER, ("adapter",))
METRICS_SERVER = Part("metrics-server", versions.METRICS_SERVER, ("metrics-server",))
PROMETHEUS = Part("prometheus", versions.PROMETHEUS, ("prometheus",))
# Centrifugo is the reference server bench/side_by_side.py compares against: built on demand by
# that bench (or by naming it here), not by `./dev setup`, so CI never pays for it.
CENTRIFUGO = Part("centrifugo", versions.CENTRIFUGO, ("centrifugo",))
# The parts `./dev setup` (this module without arguments) builds.
PARTS: dict[str, Part] = {
    p.name: p
    for p in (
        KUBERNETES,
        KWOK,
        FERRETDB,
        METRICS_ADAPTER,
        HELM,
        LUA,
        KSTATUS,
        COREDNS,
        PROMETHEUS_ADAPTER,
        METRICS_SERVER,
        PROMETHEUS,
    )
}
ON_DEMAND_PARTS: dict[str, Part] = {CENTRIFUGO.name: CENTRIFUGO}
ALL_PARTS: dict[str, Part] = {**PARTS, **ON_DEMAND_PARTS}


@dataclass
class GoBuild:
    """A throwaway Go module in the cache that builds `packages` into a part's bin dir."""

    part: Part
    module: str
    requires: dict[str, str]
    packages: dict[str, str]  # binary name -> Go package path
    replaces: dict[str, str] = field(default_factory=dict)
    ldflags: str = ""
    tags: tuple[str, ...] = ()
    template: Path | None = None

    def run(self) -> None:
        work = CACHE_ROOT / "build" / f"{self.part.name}-{self.part.version}"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        if self.template is not None:
            shutil.copytree(self.template, work, dirs_exist_ok=True)
        lines = [f"module {self.module}", "", "go 1.26", "", "require ("]
        lines += [f"\t{mod} {ver}" for mod, ver in sorted(self.requires.items())]
        lines += [")", ""]
        if self.replaces:
            lines += ["replace ("]
            lines += [f"\t{mod} => {target}" for mod, target in sorted(self.replaces.items())]
            lines += [")", ""]
        (work / "go.mod").write_text("\n".join(lines))
        env = go_env()
        started = time.monotonic()
        _run(["go", "mod", "tidy"], cwd=work, env=env)
        self.part.bin_dir.mkdir(parents=True, exist_ok=True)
        for binary, package in self.packages.items():
            print(f"[build] {self.part.name}: {binary} ({package})", flush=True)
            _run(
                [
                    "go",
                    "build",
                    "-trimpath",
                    f"-ldflags=-s -w {self.ldflags}",
                    f"-tags={','.join(self.tags)}",
                    "-o",
                    str(self.part.path(binary)),
                    package,
                ],
                cwd=work,
                env=env,
            )
        seconds = round(time.monotonic() - started, 1)
        stamp = {"version": self.part.version, "build_seconds": seconds, "built_at": time.time()}
        (self.part.root / "stamp.json").write_text(json.dumps(stamp))
        print(f"[build] {self.part.name} {self.part.version} built in {seconds}s", flush=True)
        shutil.rmtree(work, ignore_errors=True)


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CGO_ENABLED"] = "0"
    # 2-core machines: more parallel compiles only thrash memory and the scheduler.
    env.setdefault("GOFLAGS", "-p=2 -buildvcs=false")
    env.setdefault("GOTOOLCHAIN", "local")
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"[build] failed in {cwd}: {' '.join(cmd)}")
    return proc.stdout


def published_gomod(module: str, version: str) -> str:
    """The go.mod a module published at `version`, fetched through the Go module proxy."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        env=go_env(),
        text=True,
        capture_output=True,
        check=True,
        cwd=CACHE_ROOT,
    ).stdout
    return Path(json.loads(out)["GoMod"]).read_text()


def staging_replaces(gomod: str, staging_version: str) -> dict[str, str]:
    """Map each k8s.io module that kubernetes replaces with ./staging/... to its published version.

    k8s.io/kubernetes requires its staging modules at v0.0.0 and points them at its own tree;
    outside that tree they must come from the proxy as v0.<minor>.<patch>.
    """
    found = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", gomod, flags=re.MULTILINE)
    if not found:
        raise ValueError("no staging replace directives found in the kubernetes go.mod")
    return {mod: f"{mod} {staging_version}" for mod in found}


def required_version(gomod: str, module: str) -> str:
    match = re.search(rf"^\s*{re.escape(module)}\s+(v\S+)", gomod, flags=re.MULTILINE)
    if match is None:
        raise ValueError(f"{module} is not required by this go.mod")
    return match.group(1)


def kubernetes_ldflags(version: str) -> str:
    major, minor, _ = version.lstrip("v").split(".")
    pkg = "k8s.io/component-base/version"
    values = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    flags = [f"-X {pkg}.{k}={v}" for k, v in values.items()]
    flags += [f"-X k8s.io/client-go/pkg/version.{k}={v}" for k, v in values.items()]
    return " ".join(flags)


def build_kubernetes() -> None:
    version = KUBERNETES.version
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    gomod = published_gomod("k8s.io/kubernetes", version)
    etcd_version = required_version(gomod, "go.etcd.io/etcd/server/v3")
    GoBuild(
        part=KUBERNETES,
        module="hypersend.io/tools/kubernetes",
        requires={"k8s.io/kubernetes": version, "go.etcd.io/etcd/server/v3": etcd_version},
        replaces=staging_replaces(gomod, versions.staging_version(version)),
        packages={
            "etcd": "./etcd",
            "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
            "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
            "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
            "kubectl": "k8s.io/kubernetes/cmd/kubectl",
            "kubelet": "k8s.io/kubernetes/cmd/kubelet",
            "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
        },
        ldflags=kubernetes_ldflags(version),
        template=GOMOD_TEMPLATES / "k8s",
    ).run()


def build_kwok() -> None:
    GoBuild(
        part=KWOK,
        module="hypersend.io/tools/kwok",
        requires={"sigs.k8s.io/kwok": KWOK.version},
        packages={"kwok": "sigs.k8s.io/kwok/cmd/kwok", "kwok-stages": "./stages"},
        ldflags=f"-X sigs.k8s.io/kwok/pkg/consts.Version={KWOK.version}",
        template=GOMOD_TEMPLATES / "kwok",
    ).run()


def build_ferretdb() -> None:
    GoBuild(
        part=FERRETDB,
        module="hypersend.io/tools/ferretdb",
        requires={"github.com/FerretDB/FerretDB": FERRETDB.version},
        packages={"ferretdb": "."},
        # Our main package runs FerretDB's embeddable package; see tools/gomod/ferretdb/main.go.
        ldflags=f"-X main.ferretdbVersion={FERRETDB.version}",
        template=GOMOD_TEMPLATES / "ferretdb",
    ).run()


def build_metrics_adapter() -> None:
    GoBuild(
        part=METRICS_ADAPTER,
        module="hypersend.io/tools/metricsadapter",
        requires={"sigs.k8s.io/custom-metrics-apiserver": METRICS_ADAPTER.version},
        # Upstream's test-adapter main writes metrics on a fixed ":8080"; the template's main.go
        # runs the same provider with a configurable (loopback) write address.
        packages={"metrics-adapter": "."},
        template=GOMOD_TEMPLATES / "metrics-adapter",
    ).run()


def helm_ldflags(version: str, client_go: str) -> str:
    """The -X flags helm's Makefile sets: its version, and the Kubernetes version it defaults to
    (from the client-go it requires, v0.<minor>.<patch> -> 1.<minor>)."""
    _, k8s_minor, _ = client_go.lstrip("v").split(".")
    flags = [
        f"-X helm.sh/helm/v3/internal/version.version={version}",
        "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
    ]
    for pkg in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        flags += [f"-X {pkg}.k8sVersionMajor=1", f"-X {pkg}.k8sVersionMinor={k8s_minor}"]
    return " ".join(flags)


def build_helm() -> None:
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    gomod = published_gomod("helm.sh/helm/v3", HELM.version)
    GoBuild(
        part=HELM,
        module="hypersend.io/tools/helm",
        requires={"helm.sh/helm/v3": HELM.version},
        packages={"helm": "helm.sh/helm/v3/cmd/helm"},
        ldflags=helm_ldflags(HELM.version, required_version(gomod, "k8s.io/client-go")),
        template=GOMOD_TEMPLATES / "helm",
    ).run()


def build_lua() -> None:
    GoBuild(
        part=LUA,
        module="hypersend.io/tools/glua",
        # ArgoCD encodes a script's returned table with gopher-json; the runner does the same.
        requires={
            "github.com/yuin/gopher-lua": LUA.version,
            "layeh.com/gopher-json": "v0.0.0-20190114024228-97fed8db8427",
        },
        packages={"glua": "./glua"},
        template=GOMOD_TEMPLATES / "gopher-lua",
    ).run()


def build_coredns() -> None:
    GoBuild(
        part=COREDNS,
        module="hypersend.io/tools/coredns",
        requires={"github.com/coredns/coredns": COREDNS.version},
        # Our main links just the plugins the node's Corefile uses (tools/gomod/coredns/main.go).
        packages={"coredns": "."},
        template=GOMOD_TEMPLATES / "coredns",
    ).run()


def build_prometheus_adapter() -> None:
    GoBuild(
        part=PROMETHEUS_ADAPTER,
        module="hypersend.io/tools/prometheusadapter",
        requires={"sigs.k8s.io/prometheus-adapter": PROMETHEUS_ADAPTER.version},
        packages={"adapter": "sigs.k8s.io/prometheus-adapter/cmd/adapter"},
        template=GOMOD_TEMPLATES / "prometheus-adapter",
    ).run()


def build_metrics_server() -> None:
    GoBuild(
        part=METRICS_SERVER,
        module="hypersend.io/tools/metricsserver",
        requires={"sigs.k8s.io/metrics-server": METRICS_SERVER.version},
        packages={"metrics-server": "sigs.k8s.io/metrics-server/cmd/metrics-server"},
        template=GOMOD_TEMPLATES / "metrics-server",
    ).run()


def prometheus_release(version: str) -> str:
    """Prometheus 3 publishes release 3.X.Y as Go module version v0.3XX.Y."""
    major, minor, patch = version.lstrip("v").split(".")
    if major != "0" or not 300 <= int(minor) < 400:
        raise ValueError(f"not a Prometheus 3 module version: {version}")
    return f"3.{int(minor) - 300}.{patch}"


def prometheus_ldflags(version: str) -> str:
    """The -X flags Prometheus's promu sets, so `--version` and build_info name the release."""
    release = prometheus_release(version)
    pkg = "github.com/prometheus/common/version"
    return f"-X {pkg}.Version={release} -X {pkg}.Branch=release -X {pkg}.BuildUser=hypersend"


def build_prometheus() -> None:
    GoBuild(
        part=PROMETHEUS,
        module="hypersend.io/tools/prometheus",
        requires={"github.com/prometheus/prometheus": PROMETHEUS.version},
        packages={"prometheus": "github.com/prometheus/prometheus/cmd/prometheus"},
        ldflags=prometheus_ldflags(PROMETHEUS.version),
        # Only the Kubernetes service discovery (plugins/plugin_kubernetes.go honours these tags):
        # the cloud SDKs of the other mechanisms would triple the build for nothing used here.
        tags=("remove_all_sd", "enable_kubernetes_sd"),
        template=GOMOD_TEMPLATES / "prometheus",
    ).run()


def build_kstatus() -> None:
    GoBuild(
        part=KSTATUS,
        module="hypersend.io/tools/kstatus",
        requires={"sigs.k8s.io/cli-utils": KSTATUS.version},
        # A main package that runs kstatus's status.Compute on one object (see its main.go).
        packages={"kstatus": "."},
        template=GOMOD_TEMPLATES / "kstatus",
    ).run()


def build_centrifugo() -> None:
    GoBuild(
        part=CENTRIFUGO,
        module="hypersend.io/tools/centrifugo",
        requires={"github.com/centrifugal/centrifugo/v6": CENTRIFUGO.version},
        packages={"centrifugo": "github.com/centrifugal/centrifugo/v6"},
        # The version its release build sets (its .goreleaser.yml, without the "v"); the
        # usage-stats endpoint and token stay empty, so this build never reports anywhere.
        ldflags="-X github.com/centrifugal/centrifugo/v6/internal/build.Version="
        + CENTRIFUGO.version.removeprefix("v"),
        template=GOMOD_TEMPLATES / "centrifugo",
    ).run()


def source_digest(directory: Path) -> str:
    """A short digest of a Go module's sources (go.mod, go.sum, *.go): its cache key."""
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        if path.name in ("go.mod", "go.sum") or path.suffix == ".go":
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def build_own_module(name: str, source: Path) -> Path:
    """Build one of this repository's Go modules (e.g. bench/loadgen, its go.mod and go.sum
    committed) into ~/.cache/hypersend/<name>-<digest of its sources>/<name>, once per content.
    Its own tests run first: CI builds no tool only a benchmark needs, so this is where they run."""
    root = CACHE_ROOT / f"{name}-{source_digest(source)}"
    binary = root / name
    if (root / "stamp.json").exists() and binary.exists():
        return binary
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"[build] {name} from {source}", flush=True)
    _run(["go", "test", "./..."], cwd=source, env=go_env())
    partial = root / f".{name}.partial"
    _run(
        ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(partial), "."],
        cwd=source,
        env=go_env(),
    )
    partial.rename(binary)
    seconds = round(time.monotonic() - started, 1)
    stamp = {"source": str(source), "build_seconds": seconds, "built_at": time.time()}
    (root / "stamp.json").write_text(json.dumps(stamp))
    return binary


BUILDERS = {
    "kubernetes": build_kubernetes,
    "kwok": build_kwok,
    "ferretdb": build_ferretdb,
    "metrics-adapter": build_metrics_adapter,
    "helm": build_helm,
    "gopher-lua": build_lua,
    "coredns": build_coredns,
    "prometheus-adapter": build_prometheus_adapter,
    "metrics-server": build_metrics_server,
    "kstatus": build_kstatus,
    "prometheus": build_prometheus,
    "centrifugo": build_centrifugo,
}


def ensure(names: list[str], force: bool = False) -> None:
    for name in names:
        part = ALL_PARTS[name]
        if part.is_built() and not force:
            print(f"[build] {name} {part.version}: cached at {part.bin_dir}", flush=True)
            continue
        BUILDERS[name]()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    # No argparse `choices` here: it rejects a list default given to nargs="*".
    parser.add_argument(
        "parts",
        nargs="*",
        help=f"parts to build (default: all of {list(PARTS)}; "
        f"built only when named: {list(ON_DEMAND_PARTS)})",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.parts) - set(ALL_PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {list(ALL_PARTS)}")
    ensure(args.parts or list(PARTS), force=args.force)


if __name__ == "__main__":
    main()
