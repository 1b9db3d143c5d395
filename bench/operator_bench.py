"""Operator figures on the local cluster: time from `kubectl apply` to Ready, API requests per
first pass and per idle resync, the operator's RSS and what its watches received, for 1, 10 and
100 HypersendClusters, beside 1,000 unrelated ConfigMaps and Deployments in other namespaces.

    PYTHONPATH=tools:operator .venv/bin/python bench/operator_bench.py [--sizes 1 10 100]
        [--unrelated 1000]

Uses the cluster named by HYPERSEND_KUBECONFIG (a local cluster from `./dev up` or
`python -m hypersend_devenv.cluster up`), or starts a throwaway local cluster. The operator runs as
a real process with a short resync. Each cluster is examples/dev.yaml in its own namespace, with a
pre-bound volume for its MongoDB claim and the HPA's connection metric fed at its target.

Writes are counted twice: by the operator's own counter of mutating requests
(`hypersend_operator_api_write_requests_total`), and by the API server's
`apiserver_request_total` for verbs APPLY/PATCH/POST/PUT/DELETE on the kinds the operator writes
(other controllers write some of those too, e.g. Events, so that figure is an upper bound).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hypersend_devenv.cluster import LocalCluster, kubectl_binary
from hypersend_devenv.metrics_adapter import MetricsWriter

REPO = Path(__file__).resolve().parents[1]
RESYNC = 15.0
MUTATING = {"APPLY", "PATCH", "POST", "PUT", "DELETE"}
# Resources the operator writes (the API server's metric has no user label).
OPERATOR_RESOURCES = {
    "hypersendclusters", "secrets", "configmaps", "services", "deployments", "statefulsets",
    "horizontalpodautoscalers", "poddisruptionbudgets", "ingresses", "networkpolicies", "events",
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    def __init__(self, kubeconfig: Path, local: LocalCluster | None) -> None:
        self.kubeconfig = kubeconfig
        self.local = local

    def kubectl(self, *args: str, input: str | None = None) -> str:
        cmd = [str(kubectl_binary()), "--kubeconfig", str(self.kubeconfig), *args]
        proc = subprocess.run(cmd, input=input, text=True, capture_output=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr}")
        return proc.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def apiserver_writes(self) -> dict[str, int]:
        """Mutating requests so far on the kinds the operator writes, by "VERB resource[/sub]"."""
        text = self.kubectl("get", "--raw", "/metrics")
        counts: dict[str, int] = {}
        for line in text.splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if labels.get("verb") in MUTATING and labels.get("resource") in OPERATOR_RESOURCES:
                key = f"{labels['verb']} {labels['resource']}"
                if labels.get("subresource"):
                    key += "/" + labels["subresource"]
                counts[key] = counts.get(key, 0) + int(float(line.rsplit(" ", 1)[1]))
        return counts


@contextlib.contextmanager
def cluster_under_test() -> Iterator[Cluster]:
    given = os.environ.get("HYPERSEND_KUBECONFIG")
    if given:
        path = Path(given)
        yield Cluster(path, LocalCluster(path.parent))
        return
    with tempfile.TemporaryDirectory(prefix="hypersend-bench-") as tmp:
        local = LocalCluster(Path(tmp) / "cluster")
        local.up()
        try:
            yield Cluster(local.kubeconfig, local)
        finally:
            local.down()


class Operator:
    def __init__(self, kubeconfig: Path, log: Path) -> None:
        self.metrics_port, self.health_port = free_port(), free_port()
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "hypersend_operator", "run", "--all-namespaces",
                "--metrics-port", str(self.metrics_port), "--health-port", str(self.health_port),
                "--resync-seconds", str(RESYNC),
            ],
            env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip

    def counter(self, name: str, **match: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{"):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
                if all(labels.get(k) == v for k, v in match.items()):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def pass_requests(self) -> float:
        """API requests the passes made: all but the informers' lists and watches (a watch the
        server ends every few minutes is resumed, whatever the passes do)."""
        name = "hypersend_operator_api_requests_total"
        return (
            self.counter(name) - self.counter(name, verb="watch") - self.counter(name, verb="list")
        )

    def wait_healthy(self) -> None:
        for _ in range(100):
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{self.health_port}/healthz"
                with urllib.request.urlopen(url, timeout=1):
                    return
            time.sleep(0.2)
        raise RuntimeError("operator did not become healthy")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) each process has used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / tick
    return out


def busy_processes(cluster: Cluster, op: Operator) -> dict[str, int]:
    """The processes that share this machine's cores during a measurement."""
    pids = {"operator": op.proc.pid}
    state = cluster.local.load_state() if cluster.local else None
    for record in state.processes if state else []:
        pids[record.name] = record.pid
    return pids


def feed(cluster: Cluster, writer: MetricsWriter, stop: threading.Event) -> None:
    """Report the dev example's target connections per pod for every chat pod (HPA steady)."""
    selector = "app.kubernetes.io/component=chat,app.kubernetes.io/managed-by=hypersend-operator"
    while not stop.is_set():
        with contextlib.suppress(Exception):
            for pod in cluster.json("get", "pods", "-A", "-l", selector)["items"]:
                m = pod["metadata"]
                writer.set_pod_metric(
                    m["namespace"], m["name"], "hypersend_websocket_connections", 1000
                )
        stop.wait(2)


def manifests(
    run: str, count: int, autoscaling: bool = True
) -> tuple[list[dict[str, Any]], list[str]]:
    base = yaml.safe_load((REPO / "examples" / "dev.yaml").read_text())
    docs: list[dict[str, Any]] = []
    namespaces = []
    for i in range(count):
        ns = f"bench-{run}-{i}"
        namespaces.append(ns)
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"{ns}-mongo"},
                "spec": {
                    "capacity": {"storage": "100Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "hostPath": {"path": f"/tmp/hypersend-bench/{ns}"},
                    "claimRef": {"namespace": ns, "name": "data-dev-mongo-0"},
                },
            }
        )
    crs = []
    for ns in namespaces:
        cr = json.loads(json.dumps(base))
        cr["metadata"]["namespace"] = ns
        if not autoscaling:
            cr["spec"]["autoscaling"] = {"enabled": False}
            cr["spec"]["chat"]["replicas"] = 1
        crs.append(cr)
    return docs + crs, namespaces


class ReadyWatch:
    """Records when each cluster first reports Ready for its current generation, from one
    `kubectl get -w` stream: polling with a kubectl per half second would cost this 2-core
    machine more CPU than the operator under test."""

    TEMPLATE = (
        "{.metadata.namespace} {.metadata.generation} {.status.observedGeneration} "
        '{.status.phase}{"\\n"}'
    )

    def __init__(self, cluster: Cluster) -> None:
        self.ready: dict[str, float] = {}
        self.changed = threading.Condition()
        cmd = [
            str(kubectl_binary()), "--kubeconfig", str(cluster.kubeconfig),
            "get", "hypersendclusters", "-A", "-w", "-o", f"jsonpath={self.TEMPLATE}",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            fields = line.split()
            if len(fields) == 4 and fields[1] == fields[2] and fields[3] == "Ready":
                with self.changed:
                    self.ready.setdefault(fields[0], time.monotonic())
                    self.changed.notify_all()

    def wait(self, namespaces: list[str], started: float, timeout: float) -> list[float]:
        """Seconds from `started` (the apply) to Ready for each of `namespaces`."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not all(ns in self.ready for ns in namespaces):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    done = sum(ns in self.ready for ns in namespaces)
                    raise RuntimeError(f"only {done}/{len(namespaces)} Ready after {timeout}s")
                self.changed.wait(left)
            return sorted(self.ready[ns] - started for ns in namespaces)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


UNRELATED_NAMESPACES = 10


def unrelated(count: int, value: str) -> list[dict[str, Any]]:
    """`count` ConfigMaps and `count` Deployments (no pods) that are none of the operator's."""
    docs: list[dict[str, Any]] = []
    for n in range(UNRELATED_NAMESPACES):
        ns = f"bench-unrelated-{n}"
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for i in range(count):
        ns = f"bench-unrelated-{i % UNRELATED_NAMESPACES}"
        meta = {"name": f"other-{i}", "namespace": ns, "labels": {"app": "other"}}
        docs.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"v": value}}
        )
        docs.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {**meta, "annotations": {"v": value}},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": "other"}},
                    "template": {
                        "metadata": {"labels": {"app": "other"}},
                        "spec": {"containers": [{"name": "c", "image": "example.invalid/none"}]},
                    },
                },
            }
        )
    return docs


def apply_docs(cluster: Cluster, docs: list[dict[str, Any]]) -> None:
    for start in range(0, len(docs), 500):
        chunk = docs[start : start + 500]
        cluster.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in chunk))


def create_unrelated(cluster: Cluster, count: int) -> None:
    """The unrelated objects, made before any measurement, and waited for until the controller
    manager has handled every Deployment (a ReplicaSet each: done during a measurement, that work
    would delay the clusters' own Deployments for minutes). Measurements then only change their
    data and annotations, which costs the controllers nothing."""
    apply_docs(cluster, unrelated(count, "initial"))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        items = cluster.json("get", "deployments", "-A", "-l", "app=other")["items"]
        done = [d for d in items if (d.get("status") or {}).get("observedGeneration")]
        if len(done) >= count:
            return
        time.sleep(2)
    raise RuntimeError("the controller manager did not handle the unrelated Deployments")


def watch_totals(op: Operator) -> tuple[float, float]:
    return (
        op.counter("hypersend_operator_watch_events_total"),
        op.counter("hypersend_operator_watch_bytes_total"),
    )


def measure(
    cluster: Cluster, op: Operator, count: int, unrelated_count: int, autoscaling: bool
) -> dict[str, Any]:
    docs, namespaces = manifests(f"{int(time.time()) % 100000}", count, autoscaling)
    requests0 = op.pass_requests()
    first0 = op.counter("hypersend_operator_reconciles_total")
    watch = ReadyWatch(cluster)
    pids = busy_processes(cluster, op)
    try:
        cpu0 = cpu_seconds(pids)
        started = time.monotonic()
        cluster.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))
        times = watch.wait(namespaces, started, timeout=120 + 6 * count)
        cpu = {k: round(v - cpu0.get(k, 0.0), 1) for k, v in cpu_seconds(pids).items()}
    finally:
        watch.stop()
    requests_to_ready = op.pass_requests() - requests0
    passes_to_ready = op.counter("hypersend_operator_reconciles_total") - first0
    time.sleep(RESYNC)  # settle: HPA status and the first resyncs after Ready

    # Unrelated objects change while the operator idles: none of it may reach the operator.
    events0, bytes0 = watch_totals(op)
    apply_docs(cluster, unrelated(unrelated_count, str(time.time())))

    periods = 3
    idle_requests0 = op.pass_requests()
    op_writes0 = op.counter("hypersend_operator_api_write_requests_total")
    api_writes0 = cluster.apiserver_writes()
    resyncs0 = op.counter("hypersend_operator_reconciles_total", trigger="resync")
    time.sleep(RESYNC * periods)
    op_writes = op.counter("hypersend_operator_api_write_requests_total") - op_writes0
    api_after = cluster.apiserver_writes()
    api_writes = {k: v - api_writes0.get(k, 0) for k, v in api_after.items()}
    api_writes = {k: v for k, v in api_writes.items() if v}
    resyncs = op.counter("hypersend_operator_reconciles_total", trigger="resync") - resyncs0
    idle_requests = op.pass_requests() - idle_requests0
    events, received = (b - a for a, b in zip((events0, bytes0), watch_totals(op), strict=True))
    rss = op.rss_mib()

    # CRs first, while the operator runs: a deletePolicy Delete cluster has its finalizer.
    for ns in namespaces:
        cluster.kubectl("delete", "hypersendclusters", "--all", "-n", ns, "--wait=false")
    for ns in namespaces:
        cluster.kubectl("wait", "--for=delete", "hypersendclusters", "--all", "-n", ns)
    for ns in namespaces:
        cluster.kubectl("delete", "namespace", ns, "--wait=false")
    cluster.kubectl("delete", "pv", *[f"{ns}-mongo" for ns in namespaces], "--wait=false")
    # The next measurement starts on a quiet control plane, not beside this one's cleanup.
    for ns in namespaces:
        cluster.kubectl("wait", "--for=delete", f"namespace/{ns}", "--timeout=600s")
    return {
        "clusters": count,
        "autoscaling": autoscaling,
        "apply_to_ready_median_s": statistics.median(times),
        "apply_to_ready_max_s": times[-1],
        "cpu_seconds_apply_to_ready": cpu,
        "api_requests_to_ready_per_cluster": requests_to_ready / count,
        "passes_to_ready_per_cluster": passes_to_ready / count,
        "api_requests_per_idle_resync_pass": idle_requests / resyncs if resyncs else float("nan"),
        "operator_rss_mib": rss,
        "unrelated_objects_changed": 2 * unrelated_count,
        "watch_events_while_idle": events,
        "watch_bytes_while_idle": received,
        "idle_window_s": RESYNC * periods,
        "resync_passes": resyncs,
        "operator_writes": op_writes,
        "operator_writes_per_resync_pass": op_writes / resyncs if resyncs else float("nan"),
        # From every client (controllers write HPA status, Deployment status, Events ...):
        # the operator's own writes would show as APPLY, or as PATCH hypersendclusters/status.
        "apiserver_mutating_requests_on_operator_kinds": sum(api_writes.values()),
        "apiserver_breakdown": api_writes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument(
        "--unrelated", type=int, default=1000, help="unrelated ConfigMaps and Deployments"
    )
    parser.add_argument(
        "--no-autoscaling",
        action="store_true",
        help="clusters without an HPA: Ready then waits on no metrics pipeline (the HPA's first "
        "evaluation of 100 HPAs fed by this bench takes most of a minute), only on the operator "
        "and the pods",
    )
    args = parser.parse_args()
    with cluster_under_test() as cluster:
        assert cluster.local is not None
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        stop = threading.Event()
        if not args.no_autoscaling:
            writer = cluster.local.start_custom_metrics()
            feeder = threading.Thread(target=feed, args=(cluster, writer, stop), daemon=True)
            feeder.start()
        log = Path(tempfile.mkdtemp(prefix="hypersend-bench-op-")) / "operator.log"
        op = Operator(cluster.kubeconfig, log)
        try:
            op.wait_healthy()
            print(f"operator log: {log}; resync every {RESYNC:.0f}s", flush=True)
            create_unrelated(cluster, args.unrelated)
            for n in args.sizes:
                result = measure(cluster, op, n, args.unrelated, not args.no_autoscaling)
                print(json.dumps(result), flush=True)
        finally:
            stop.set()
            op.stop()
            for n in range(UNRELATED_NAMESPACES):
                cluster.kubectl("delete", "namespace", f"bench-unrelated-{n}", "--wait=false")
    return 0


if __name__ == "__main__":
    sys.exit(main())
