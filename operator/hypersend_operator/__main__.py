"""`hypersend-operator run [--namespace N ... | --all-namespaces]`: run the operator.

Connects like kubectl (--kubeconfig, KUBECONFIG, in-cluster service account). Serves a liveness
endpoint (kopf's) and Prometheus metrics on their own ports. With leader election (on by default
wherever the Lease's namespace is known: in a pod, or with --leader-election-namespace), only the
replica holding the Lease writes (leader.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

import kopf
from prometheus_client import start_http_server

from hypersend_operator import metrics
from hypersend_operator.api import API_VERSION, KIND, PLURAL
from hypersend_operator.cache import ChildCache
from hypersend_operator.handlers import WATCHED_CHILDREN, Runner, RunnerConfig, register
from hypersend_operator.kube import Kind, Kube
from hypersend_operator.leader import DEFAULT_LEASE_NAME, Elector

SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def pod_namespace() -> str | None:
    """The namespace this pod runs in (downward API, else the service account's), if any."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open(SA_NAMESPACE_FILE) as f:
            return f.read().strip() or None
    except OSError:
        return None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hypersend-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator until SIGTERM")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    run.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG, in-cluster)")
    run.add_argument("--listen", default="127.0.0.1", help="address of the probe/metrics ports")
    run.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port")
    run.add_argument("--health-port", type=int, default=8081, help="liveness /healthz port")
    run.add_argument(
        "--resync-seconds", type=float, default=60.0, help="periodic full pass per cluster"
    )
    run.add_argument(
        "--max-concurrent-rollouts",
        type=int,
        default=3,
        help="clusters whose chat pods an operator upgrade may roll at the same time",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=4,
        help="reconcile passes run at once (each for a different cluster)",
    )
    run.add_argument("--log-level", default=os.environ.get("HYPERSEND_OPERATOR_LOG_LEVEL", "info"))
    run.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="only the holder of a Lease writes (default: on in a pod or with "
        "--leader-election-namespace, off on a workstation)",
    )
    run.add_argument(
        "--leader-election-namespace",
        default=None,
        help="namespace of the Lease (default: POD_NAMESPACE, the pod's namespace)",
    )
    run.add_argument("--leader-election-id", default=DEFAULT_LEASE_NAME, help="name of the Lease")
    args = parser.parse_args(argv)
    if args.command == "run":
        explicit = args.leader_election_namespace
        args.leader_election_namespace = explicit or pod_namespace()
        if args.leader_election is None:
            args.leader_election = args.leader_election_namespace is not None
        if args.leader_election and not args.leader_election_namespace:
            parser.error("--leader-election needs --leader-election-namespace (or POD_NAMESPACE)")
        if args.workers < 1:
            parser.error("--workers must be at least 1")
    if not args.namespace and not args.all_namespaces:
        args.all_namespaces = True
    return args


def settings(args: argparse.Namespace) -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    # kopf only delivers raw events of the CRs (handlers.register) and keeps no state on them.
    # Its finalizer gets a name of its own, so that kopf never removes the one operators before
    # the caches left on clusters (reconcile.LEGACY_FINALIZERS) before their data is deleted.
    s.persistence.finalizer = "kopf.hypersend.io/unused"
    # A watch stream that stalls without closing is kopf's known failure. The server ends every
    # watch after `server_timeout`; a stream silent for `inactivity_timeout` (shorter than the
    # client's hard limit, or it could never fire) is dropped and resumed.
    s.watching.server_timeout = 240
    s.watching.inactivity_timeout = 270
    s.watching.client_timeout = 300
    s.watching.connect_timeout = 10
    s.networking.request_timeout = 30
    s.networking.connect_timeout = 10
    # Events: ours carry typed reasons; kopf's own only for warnings and errors.
    s.posting.level = logging.WARNING
    # kopf's peering would pause it while another peer runs; leader election (leader.py) decides
    # who writes instead, and a follower keeps its watches warm.
    s.peering.standalone = True
    # Scanning watches CustomResourceDefinitions (and, for a namespace list, Namespaces)
    # cluster-wide to notice kinds and namespaces appearing. A namespaced install has no
    # cluster-wide read: the CRD must exist before the operator starts (the chart installs it
    # first) and the listed namespaces are taken as they are.
    s.scanning.disabled = not args.all_namespaces
    return s


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if logging.getLogger().level > logging.DEBUG:
        # One line per HTTP request or per child event drowns what matters.
        logging.getLogger("httpx2").setLevel(logging.WARNING)
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    start_http_server(args.metrics_port, addr=args.listen)

    registry = kopf.OperatorRegistry()
    # httpx2 clients and asyncio locks bind to the loop lazily, so both exist before kopf's loop.
    kube = Kube.from_env(args.kubeconfig)
    # The kinds the operator works with, known without reading CustomResourceDefinitions (a
    # namespaced install may not read them): an optional kind the cluster lacks then answers 404
    # to its informer's list, which is how its absence is learnt (cache.py).
    kube.add_kinds(
        Kind(API_VERSION, KIND, PLURAL, namespaced=True),
        *(Kind(k.api_version, k.kind, k.plural, namespaced=True) for k in WATCHED_CHILDREN),
    )
    namespaces = None if args.all_namespaces else args.namespace
    children = ChildCache(
        kube, WATCHED_CHILDREN, namespaces, lambda t, o: runner.on_child_event(t, o)
    )
    elector: Elector | None = None
    if args.leader_election:
        elector = Elector(
            kube,
            args.leader_election_namespace,
            args.leader_election_id,
            on_started_leading=lambda: runner.wake_all("leader"),
            # A follower's Ready series would go stale next to the new leader's.
            on_stopped_leading=metrics.CLUSTER_READY.clear,
        )
        kube.set_fence(elector.is_leader)
    else:
        metrics.LEADER.set(1)  # without election this process always writes
    runner = Runner(
        kube,
        RunnerConfig(
            resync_seconds=args.resync_seconds,
            max_concurrent_rollouts=args.max_concurrent_rollouts,
            workers=args.workers,
        ),
        children,
        leader=elector.is_leader if elector else lambda: True,
    )
    register(registry, runner)
    tasks: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def _startup(**_: Any) -> None:
        # Followers watch too: a new leader starts with warm caches.
        children.start()
        runner.start()
        tasks.append(asyncio.create_task(runner.resync_forever()))
        if elector is not None:
            await elector.start()

    @kopf.on.login(registry=registry)
    def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In a pod: the service account; elsewhere: KUBECONFIG or ~/.kube/config (like kubectl).
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.cleanup(registry=registry)
    async def _cleanup(**_: Any) -> None:
        for task in tasks:
            task.cancel()
        await runner.stop()
        await children.stop()
        if elector is not None:
            await elector.stop(release=True)
        await kube.close()

    kopf.run(
        registry=registry,
        settings=settings(args),
        standalone=True,
        # kopf's default identity is `user@host` through a passwd lookup, which fails for the
        # image's numeric user (no /etc/passwd entry: Dockerfile.operator); the host is enough.
        identity=f"hypersend-operator@{socket.gethostname()}",  # type: ignore[arg-type]
        clusterwide=args.all_namespaces,
        namespaces=args.namespace,
        liveness_endpoint=f"http://{args.listen}:{args.health_port}/healthz",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
