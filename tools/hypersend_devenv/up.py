"""`./dev up`: the local cluster, the operator and examples/dev.yaml, shown Ready.

    python -m hypersend_devenv.up            # start (or reuse) everything, wait for Ready
    python -m hypersend_devenv.up --down     # stop the operator, the metrics feeder and the cluster

Steps: local cluster up (etcd, API server, controllers, kwok) -> custom metrics API -> apply
`crds/` -> start the operator in the background (pid and log under `.hypersend/operator/`) ->
`kubectl apply -f examples/dev.yaml` -> wait until it is Ready -> print
`kubectl get hypersendclusters -A` and the kubeconfig path.

Every port is picked free at start, never fixed, so two checkouts run `up` side by side: the
cluster's in `.hypersend/cluster/state.json`, the operator's metrics and health ports in
`.hypersend/operator/state.json` (kept while the operator runs, so a rerun reuses them).

The local cluster is a simulation: kwok pods run no container, and there is no volume provisioner
and no metrics-server. So `up` also
- pre-binds a hostPath PersistentVolume to the dev MongoDB's claim, and
- runs a small feeder (`--feed-metrics`, in the background) that reports the chat pods'
  `hypersend_websocket_connections` to the HPA: by default the HPA's target per pod, which holds
  the replica count steady (no chat server runs in fake pods to report a real number).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from hypersend_devenv import procs
from hypersend_devenv.cluster import LocalCluster, free_ports
from hypersend_devenv.metrics_adapter import MetricsWriter

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "dev.yaml"
CRDS = REPO / "crds"
CONNECTIONS = "hypersend_websocket_connections"
OPERATOR = "hypersend-operator"


def say(msg: str) -> None:
    print(f"[up] {msg}", file=sys.stderr, flush=True)


def operator_dir(cluster: LocalCluster) -> Path:
    return cluster.state_dir.parent / "operator"


def _state_file(cluster: LocalCluster) -> Path:
    return operator_dir(cluster) / "state.json"


def _load_state(cluster: LocalCluster) -> dict[str, Any]:
    """{"processes": [ProcessRecord...], "ports": {"operator_metrics": int, ...}}."""
    path = _state_file(cluster)
    data: Any = json.loads(path.read_text()) if path.exists() else {}
    if isinstance(data, list):  # written before the ports were recorded
        data = {"processes": data}
    return {"processes": data.get("processes", []), "ports": data.get("ports", {})}


def _load_records(cluster: LocalCluster) -> list[procs.ProcessRecord]:
    return [procs.ProcessRecord.from_json(r) for r in _load_state(cluster)["processes"]]


def _save_records(
    cluster: LocalCluster,
    records: list[procs.ProcessRecord],
    ports: dict[str, int] | None = None,
) -> None:
    path = _state_file(cluster)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "processes": [r.to_json() for r in records],
        "ports": _load_state(cluster)["ports"] if ports is None else ports,
    }
    path.write_text(json.dumps(state, indent=1))


def recorded_ports(cluster: LocalCluster) -> dict[str, int]:
    """The operator's ports as recorded by `up` (empty when it has not run)."""
    return {k: int(v) for k, v in _load_state(cluster)["ports"].items()}


def operator_ports(cluster: LocalCluster) -> dict[str, int]:
    """The ports of the running operator, or two free ones for a new operator (recorded)."""
    running = any(r.name == OPERATOR and procs.is_running(r) for r in _load_records(cluster))
    known = recorded_ports(cluster)
    if running and {"operator_metrics", "operator_health"} <= known.keys():
        return known
    metrics_port, health_port = free_ports(2)
    ports = {"operator_metrics": metrics_port, "operator_health": health_port}
    _save_records(cluster, _load_records(cluster), ports)
    return ports


def _ensure_background(
    cluster: LocalCluster, name: str, argv: list[str], env: dict[str, str]
) -> procs.ProcessRecord:
    records = _load_records(cluster)
    for r in records:
        if r.name == name and procs.is_running(r):
            say(f"{name} already running (pid {r.pid})")
            return r
    log = operator_dir(cluster) / f"{name}.log"
    record = procs.start(name, argv, log, env=env)
    _save_records(cluster, [r for r in records if r.name != name] + [record])
    say(f"{name} started (pid {record.pid}, log {log})")
    return record


def _example() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return doc


def mongo_volume(namespace: str, cluster_name: str) -> dict[str, Any]:
    """A hostPath PV pre-bound to the dev MongoDB's claim (the local cluster has no provisioner)."""
    claim = f"data-{cluster_name}-mongo-0"
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"hypersend-dev-{namespace}-{claim}"},
        "spec": {
            "capacity": {"storage": "100Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": f"/tmp/hypersend-dev-volumes/{namespace}-{claim}"},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    }


def feed_metrics(kubeconfig: str, write_port: int, per_pod: float, interval: float) -> None:
    """Loop: report `per_pod` connections for every chat pod of every HypersendCluster."""
    cluster = LocalCluster(Path(kubeconfig).parent)
    writer = MetricsWriter(write_port)
    selector = "app.kubernetes.io/component=chat,app.kubernetes.io/managed-by=hypersend-operator"
    while True:
        try:
            pods = json.loads(
                cluster.kubectl("get", "pods", "-A", "-l", selector, "-o", "json").stdout
            )["items"]
            for pod in pods:
                meta = pod["metadata"]
                writer.set_pod_metric(meta["namespace"], meta["name"], CONNECTIONS, per_pod)
        except Exception as e:  # the feeder must outlive a restarting API server
            print(f"feed-metrics: {e}", file=sys.stderr, flush=True)
        time.sleep(interval)


def wait_ready(cluster: LocalCluster, namespace: str, name: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        proc = cluster.kubectl(
            "get", "hypersendcluster", name, "-n", namespace, "-o", "json", check=False
        )
        if proc.returncode == 0:
            obj = json.loads(proc.stdout)
            last = obj.get("status") or {}
            fresh = last.get("observedGeneration") == obj["metadata"]["generation"]
            if fresh and last.get("phase") == "Ready":
                return last
        time.sleep(1)
    raise TimeoutError(
        f"{namespace}/{name} not Ready after {timeout:.0f}s; status:\n{json.dumps(last, indent=1)}"
    )


def up(args: argparse.Namespace) -> int:
    cluster = LocalCluster()
    result = cluster.up(log=say)
    say(f"cluster {'reused' if result.reused else 'started'} in {result.seconds:.1f}s")
    writer = cluster.start_custom_metrics()
    say("custom metrics API available")
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/hypersendclusters.hypersend.io"
    )
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "operator"), str(REPO / "tools"), env.get("PYTHONPATH", "")]
    )
    ports = operator_ports(cluster)
    _ensure_background(
        cluster,
        OPERATOR,
        [
            sys.executable, "-m", "hypersend_operator", "run", "--all-namespaces",
            "--listen", "127.0.0.1",
            "--metrics-port", str(ports["operator_metrics"]),
            "--health-port", str(ports["operator_health"]),
        ],
        env,
    )  # fmt: skip
    say(
        f"operator metrics http://127.0.0.1:{ports['operator_metrics']}/metrics, "
        f"health http://127.0.0.1:{ports['operator_health']}/healthz"
    )
    _ensure_background(
        cluster,
        "metrics-feeder",
        [
            sys.executable, "-m", "hypersend_devenv.up", "--feed-metrics",
            "--write-port", str(writer.write_port), "--connections", str(args.connections),
        ],
        env,
    )  # fmt: skip

    doc = _example()
    namespace = doc["metadata"].get("namespace", "default")
    name = doc["metadata"]["name"]
    volume = mongo_volume(namespace, name)
    phase = cluster.kubectl(
        "get", "pv", volume["metadata"]["name"], "-o", "jsonpath={.status.phase}", check=False
    ).stdout
    if phase in ("Released", "Failed"):  # its claim was deleted with an earlier dev cluster
        cluster.kubectl("delete", "pv", volume["metadata"]["name"], "--wait=true")
    cluster.kubectl("apply", "-f", "-", input=json.dumps(volume))
    cluster.kubectl("apply", "-f", str(EXAMPLE))
    say(f"applied {EXAMPLE.relative_to(REPO)}; waiting for Ready")
    started = time.monotonic()
    try:
        wait_ready(cluster, namespace, name, args.timeout)
    except TimeoutError as e:
        log = operator_dir(cluster) / f"{OPERATOR}.log"
        say(f"{e}\noperator log ({log}):\n{procs.log_tail(log)}")
        return 1
    say(f"{namespace}/{name} Ready in {time.monotonic() - started:.1f}s")
    print(cluster.kubectl("get", "hypersendclusters", "-A").stdout, end="")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def down() -> int:
    cluster = LocalCluster()
    records = _load_records(cluster)
    left = procs.stop(records)
    if records:
        say(f"stopped {', '.join(r.name for r in records)}")
    _save_records(cluster, [], {})
    left += cluster.down()
    say("cluster stopped" if not left else f"processes left running: {left}")
    return 0 if not left else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hypersend_devenv.up", description=__doc__)
    parser.add_argument("--down", action="store_true", help="stop what `up` started")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for Ready")
    parser.add_argument(
        "--connections",
        type=float,
        default=1000.0,
        help="simulated open WebSockets per chat pod reported to the HPA",
    )
    parser.add_argument("--feed-metrics", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--write-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.feed_metrics:
        kubeconfig = os.environ["KUBECONFIG"]
        feed_metrics(kubeconfig, int(args.write_port), args.connections, interval=5.0)
        return 0
    if args.down:
        return down()
    try:
        return up(args)
    except subprocess.CalledProcessError as e:
        say(f"failed: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
