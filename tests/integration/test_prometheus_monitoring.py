"""The dashboard and the alert rules on a real Prometheus (Debian's, on loopback) scraping a real
chat server with the labels a ServiceMonitor gives (namespace, pod, job): every dashboard query
over the chat server's series returns data, every rule (the chart's files and a cluster's
PrometheusRule) evaluates without error, and the connection alert goes pending on real series,
in both scopes.

cAdvisor's and the operator's series have no exporter here: the panels reading them are checked
for syntax and names in tests/unit/monitoring, and against the e2e Prometheus.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from hypersend_operator import rulefiles
from hypersend_operator.builders import build_all
from hypersend_operator.builders.context import PROMETHEUS_RULE

from tests.fixtures.chat import ChatServerFactory, ChatServerProcess, free_port
from tests.integration.chatserver.realtime_client import (
    Client,
    connect_user,
    create_group,
    register,
)
from tests.unit.monitoring.promql import EXTERNAL, metric_names
from tests.unit.monitoring.test_dashboard import dashboard, panels
from tests.unit.operator.support import ctx, find

pytestmark = pytest.mark.integration

NAMESPACE = "team-a"
POD = "demo-chat-7d9f8c6b5-x2x4z"  # what the `demo` cluster's rule selects
JOB = "demo-chat"
DEADLINE_SECONDS = 60.0
T = TypeVar("T")


def poll(what: str, probe: Callable[[], T | None], timeout: float = DEADLINE_SECONDS) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


async def wait_for(what: str, probe: Callable[[], T | None]) -> T:
    """`poll` without blocking the event loop the test's WebSockets run on."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        got = probe()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


class Prometheus:
    """`prometheus` on a free loopback port, scraping and evaluating every second."""

    def __init__(self, workdir: Path, target: str, rule_files: list[Path]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise AssertionError("prometheus is missing: `./dev setup` installs Debian's package")
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "static_configs": [
                        {"targets": [target], "labels": {"namespace": NAMESPACE, "pod": POD}}
                    ],
                }
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", trust_env=False, timeout=10
        )
        poll("Prometheus ready", self._ready)

    def _ready(self) -> bool | None:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.process.returncode}")
        try:
            return True if self.http.get("/-/ready").status_code == 200 else None
        except httpx.TransportError:
            return None

    def api(self, path: str, **params: str) -> Any:
        body = self.http.get(f"/api/v1/{path}", params=params).json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def cluster_rule_file(path: Path) -> Path:
    c = ctx(capabilities=frozenset({PROMETHEUS_RULE}), monitoring={"prometheusRule": True})
    assert (c.namespace, c.name) == (NAMESPACE, "demo")
    groups = find(build_all(c), "PrometheusRule", "demo-chat")["spec"]["groups"]
    path.write_text(yaml.safe_dump({"groups": groups}))
    return path


@pytest.fixture
def chat(chat_server_factory: ChatServerFactory) -> ChatServerProcess:
    # Two sockets reach 100 % of the limit: the connection alert's condition holds.
    return chat_server_factory.start(ws_max_connections=2, pod_name=POD)


@pytest.fixture
def prometheus(tmp_path: Path, chat: ChatServerProcess) -> Iterator[Prometheus]:
    rules = [rulefiles.DEFAULT_DIR / name for name in rulefiles.rendered()]
    rules.append(cluster_rule_file(tmp_path / "cluster.rules.yaml"))
    server = Prometheus(tmp_path, f"127.0.0.1:{chat.port}", rules)
    try:
        yield server
    finally:
        server.stop()


async def traffic(chat: ChatServerProcess) -> list[Client]:
    """Requests, a message over WebSocket delivered to two sockets (left open)."""
    alice, bob = await register(chat.url), await register(chat.url)
    room = await create_group(chat.url, alice, [bob])
    clients = [await connect_user(chat.ws_url, alice), await connect_user(chat.ws_url, bob)]
    ack = await clients[0].send_message(room, "hello")
    assert ack["type"] == "ack", ack
    for client in clients:
        await client.until_type("message")
    return clients


CHAT_ONLY_VARIABLES = {"$namespace": NAMESPACE, "$job": JOB, "$__rate_interval": "1m"}


def chat_queries() -> list[tuple[str, str]]:
    """(panel, query) of every panel that reads only the chat server's own series."""
    out = []
    for panel in panels(dashboard()):
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in CHAT_ONLY_VARIABLES.items():
                expr = expr.replace(variable, value)
            names = metric_names(expr)
            if names & set(EXTERNAL) or any(n.startswith("hypersend_operator_") for n in names):
                continue
            out.append((panel["title"], expr))
    return out


async def test_dashboard_and_rules_on_a_real_prometheus(
    chat: ChatServerProcess, prometheus: Prometheus
) -> None:
    clients = await traffic(chat)
    try:
        await wait_for("the chat target up", lambda: prometheus.query("up == 1") or None)

        queries = chat_queries()
        assert len(queries) >= 15
        for title, expr in queries:

            def data(e: str = expr) -> list[dict[str, Any]] | None:
                return prometheus.query(e) or None

            await wait_for(f"data for panel {title!r}: {expr}", data)

        # Every rule of the three files has been evaluated, without an error.
        def evaluated() -> list[dict[str, Any]] | None:
            rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
            never = "0001-01-01T00:00:00Z"
            return rules if all(r["lastEvaluation"] != never for r in rules) else None

        rules = await wait_for("every rule evaluated", evaluated)
        assert len(rules) == 10 + 1 + 12
        assert {r["name"]: r.get("lastError", "") for r in rules if r["health"] != "ok"} == {}

        # 2 of 2 connections: pending (its `for` is 10m) in the chart's and the cluster's rule.
        def pending() -> list[dict[str, str]] | None:
            alerts = prometheus.api("alerts")["alerts"]
            near = [
                a["labels"]
                for a in alerts
                if a["labels"]["alertname"] == "HypersendChatNearConnectionLimit"
            ]
            return near if len(near) == 2 else None

        near = await wait_for("HypersendChatNearConnectionLimit pending twice", pending)
        assert sorted(a.get("hypersendcluster", "") for a in near) == ["", "demo"]
        assert all((a["namespace"], a["pod"], a["job"]) == (NAMESPACE, POD, JOB) for a in near)
        firing_or_pending = {a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"]}
        assert "HypersendChatNoTargets" not in firing_or_pending  # the target is up
    finally:
        for client in clients:
            await client.ws.close()
