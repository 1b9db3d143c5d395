"""`./dev up`: the local cluster with a real node, the operator and examples/dev.yaml, shown Ready.

    python -m hypersend_devenv.up            # start (or reuse) everything, wait for Ready
    python -m hypersend_devenv.up --down     # stop the operator and the cluster (node included)

Steps: build the images (cached by content) -> local cluster up with its real node (etcd, API
server, controllers, kubelet, containerd, kube-proxy, CoreDNS; the images imported) -> apply the
metric path (Prometheus, prometheus-adapter, metrics-server as pods; their start overlaps the
next steps) -> apply `crds/` -> start the operator in the background (pid and log under
`.hypersend/operator/`) -> give the dev MongoDB's claim a volume -> `kubectl apply -f
examples/dev.yaml` -> wait until it is Ready (its chat, Redis and MongoDB-wire pods really run
and pass their probes) and the metric path serves -> print `kubectl get hypersendclusters -A` ->
forward a free loopback port to the chat Service (`kubectl port-forward` in the background,
stopped by `--down`) and end with the web client's URL.

The connection count (CONNECTIONS) is real: the chat pods' `/metrics`, scraped by the cluster's
Prometheus and served to the HPA by prometheus-adapter (`hypersend_devenv.metrics`).

Every port is picked free at start, never fixed, so two checkouts run `up` side by side: the
cluster's in `.hypersend/cluster/state.json`, the operator's metrics and health ports in
`.hypersend/operator/state.json` (kept while the operator runs, so a rerun reuses them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from hypersend_devenv import images, metrics, procs
from hypersend_devenv.cluster import LocalCluster, NodeImages, free_ports, kubectl_binary

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "dev.yaml"
CRDS = REPO / "crds"
OPERATOR = "hypersend-operator"
CHAT_PORT = 8080  # the chat Service's port (operator/hypersend_operator/builders/service.py)
# The background `kubectl port-forward` to the chat Service that serves the web client's URL.
CHAT_FORWARD = "chat-port-forward"
FORWARD_TIMEOUT_SECONDS = 60.0


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


def mongo_volume(namespace: str, cluster_name: str, directory: Path) -> dict[str, Any]:
    """A hostPath PV pre-bound to the dev MongoDB's claim, in a directory the pod can write."""
    claim = f"data-{cluster_name}-mongo-0"
    path = directory / f"{namespace}-{claim}"
    path.mkdir(parents=True, exist_ok=True)
    # The MongoDB-wire pod runs as its image's non-root user; hostPath volumes get no fsGroup.
    path.chmod(0o777)
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"hypersend-dev-{namespace}-{claim}"},
        "spec": {
            "capacity": {"storage": "100Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": str(path)},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    }


def node_images() -> NodeImages:
    built = images.ensure_images(log=say)
    return NodeImages(
        sandbox_image=images.SANDBOX_IMAGE,
        archives=tuple(built),
    )


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


def wait_connections(
    cluster: LocalCluster, namespace: str, name: str, timeout: float
) -> int | None:
    """The cluster's `status.chat.connections` once the metric path serves it: the pods' values
    from the custom metrics API, summed by the operator (None if it does not come in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = cluster.kubectl(
            "get", "hypersendcluster", name, "-n", namespace, "-o", "json", check=False
        )
        if proc.returncode == 0:
            chat = (json.loads(proc.stdout).get("status") or {}).get("chat") or {}
            if "connections" in chat:
                return int(chat["connections"])
        time.sleep(1)
    return None


def up(args: argparse.Namespace) -> int:
    cluster = LocalCluster(real_node=True)
    result = cluster.up(timeout=300, log=say, node_images=node_images())
    say(f"cluster {'reused' if result.reused else 'started'} in {result.seconds:.1f}s")
    # The metric path's pods start while the operator and the example come up; it is waited
    # for once the example is Ready (nothing before that reads it).
    metrics_applied = metrics.apply(cluster, metrics.MetricImages.built_here())
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    cluster.wait_crd_established("hypersendclusters.hypersend.io")
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

    doc = _example()
    namespace = doc["metadata"].get("namespace", "default")
    name = doc["metadata"]["name"]
    volume = mongo_volume(namespace, name, cluster.node.layout.volumes)
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
    seconds = metrics.wait_available(cluster, metrics_applied)
    say(f"metric path (Prometheus, prometheus-adapter, metrics-server) serving in {seconds:.1f}s")
    # The adapter serves the metric once a relist finds the scraped series (metrics.py's local
    # intervals), then the operator reads it in the background: the first count takes a moment.
    connections = wait_connections(cluster, namespace, name, 120)
    if connections is None:
        say("no connection count after 120s: see `kubectl describe hpa` and the adapter's logs")
    else:
        say(
            f"the HPA reads {connections} open WebSockets through Prometheus and "
            f"prometheus-adapter {time.monotonic() - started:.1f}s after apply"
        )
    print(cluster.kubectl("get", "hypersendclusters", "-A").stdout, end="")
    print(cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide").stdout, end="")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    try:
        url = forward_chat(cluster, namespace, name, env)
    except TimeoutError as e:
        say(f"{e}; forward it by hand:")
        print(f"kubectl port-forward -n {namespace} svc/{name}-chat {CHAT_PORT}:{CHAT_PORT}")
        return 0
    # The last line: what to open (examples/dev.yaml turns the web client on).
    print(f"open {url}  (the web client; REST and WebSocket on the same port; ./dev down stops it)")
    return 0


def forward_argv(kubeconfig: Path, namespace: str, name: str, port: int) -> list[str]:
    """`kubectl port-forward` from 127.0.0.1:`port` to the chat Service."""
    return [
        str(kubectl_binary()), "--kubeconfig", str(kubeconfig),
        "port-forward", "--address", "127.0.0.1", "-n", namespace,
        f"svc/{name}-chat", f"{port}:{CHAT_PORT}",
    ]  # fmt: skip


def forward_chat(cluster: LocalCluster, namespace: str, name: str, env: dict[str, str]) -> str:
    """Forward a free local port to the chat Service in the background (recorded like the
    operator, so `./dev down` stops it) and return the web client's URL once the chat server
    answers through it. A rerun replaces an earlier forward: its port may be taken by now."""
    records = _load_records(cluster)
    old = [r for r in records if r.name == CHAT_FORWARD]
    if old:
        procs.stop(old)
        _save_records(cluster, [r for r in records if r.name != CHAT_FORWARD])
    (port,) = free_ports(1)
    _ensure_background(
        cluster, CHAT_FORWARD, forward_argv(cluster.kubeconfig, namespace, name, port), env
    )
    base = f"http://127.0.0.1:{port}"
    # No proxy from the environment: the forward listens on loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + FORWARD_TIMEOUT_SECONDS
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with opener.open(f"{base}/readyz", timeout=5) as response:
                if response.status == 200:
                    return f"{base}/app/"
        except (OSError, urllib.error.URLError) as e:
            last = str(e)
        time.sleep(0.5)
    raise TimeoutError(f"the chat Service did not answer through {base} ({last})")


def down() -> int:
    cluster = LocalCluster.existing(LocalCluster().state_dir) or LocalCluster()
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
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for Ready")
    args = parser.parse_args(argv)
    if args.down:
        return down()
    try:
        return up(args)
    except subprocess.CalledProcessError as e:
        say(f"failed: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
