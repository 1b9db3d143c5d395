"""cache.PodMetricCache against the real API server and custom.metrics.k8s.io (the test adapter
behind an APIService, tests/fixtures/kube.py's `custom_metrics`): a pass never waits for a value,
a value read in the background wakes one, a value past `max_age` is read again, and a failed read
leaves the value unknown without raising anywhere."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypersend_operator.cache import PodMetricCache
from hypersend_operator.kube import Kube

from tests.fixtures.kube import CustomMetrics

pytestmark = pytest.mark.integration

METRIC = "hypersend_cache_test_metric"
SELECTOR = "app=chat"
# A label value the API server refuses ('@' is not allowed in one): the read fails with a 400.
REFUSED_SELECTOR = "app=no@such"
DEADLINE = 30.0


class Wakes:
    """The `on_change` calls a cache makes: (namespace, cluster), in order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def __call__(self, namespace: str, cluster: str) -> None:
        self.queue.put_nowait((namespace, cluster))

    async def next(self) -> tuple[str, str]:
        return await asyncio.wait_for(self.queue.get(), DEADLINE)


def values(items: list[dict[str, Any]] | None) -> list[tuple[str, str]] | None:
    return None if items is None else [(i["describedObject"]["name"], i["value"]) for i in items]


async def chat_pod(kube_client: Kube, namespace: str, name: str) -> None:
    await kube_client.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": "chat"}},
            "spec": {"containers": [{"name": "chat", "image": "chat:1"}]},
        }
    )


async def set_metric(metrics: CustomMetrics, namespace: str, pod: str, value: float) -> None:
    await asyncio.to_thread(metrics.set_pod_metric, namespace, pod, METRIC, value)


async def until_value(
    cache: PodMetricCache, namespace: str, selector: str, want: list[tuple[str, str]] | None
) -> None:
    """Ask as a pass would (each call may start a read) until the cache answers `want`."""
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while (got := values(cache.current(namespace, "demo", selector))) != want:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{METRIC} is {got}, not {want}, after {DEADLINE}s")
        await asyncio.sleep(0.05)


async def test_a_value_is_read_in_the_background_and_wakes_a_pass(
    kube_client: Kube, kube_namespace: str, custom_metrics: CustomMetrics
) -> None:
    await chat_pod(kube_client, kube_namespace, "chat-0")
    await set_metric(custom_metrics, kube_namespace, "chat-0", 1.5)
    wakes = Wakes()
    cache = PodMetricCache(kube_client, METRIC, wakes, max_age=3600)
    try:
        # Nothing to ask for without the chat pods' selector (no HPA yet): no read, no wake.
        assert cache.current(kube_namespace, "demo", None) is None
        # The first ask never waits: not known yet, read in the background.
        assert cache.current(kube_namespace, "demo", SELECTOR) is None
        assert await wakes.next() == (kube_namespace, "demo")
        assert values(cache.current(kube_namespace, "demo", SELECTOR)) == [("chat-0", "1500m")]
        assert wakes.queue.empty()  # one wake for one new value
    finally:
        await cache.stop()


async def test_a_value_older_than_max_age_is_read_again(
    kube_client: Kube, kube_namespace: str, custom_metrics: CustomMetrics
) -> None:
    await chat_pod(kube_client, kube_namespace, "chat-0")
    await set_metric(custom_metrics, kube_namespace, "chat-0", 2)
    wakes = Wakes()
    cache = PodMetricCache(kube_client, METRIC, wakes, max_age=0.2)
    try:
        await until_value(cache, kube_namespace, SELECTOR, [("chat-0", "2")])
        assert await wakes.next() == (kube_namespace, "demo")
        await chat_pod(kube_client, kube_namespace, "chat-1")
        await set_metric(custom_metrics, kube_namespace, "chat-1", 3)
        await set_metric(custom_metrics, kube_namespace, "chat-0", 5)
        # The kept value has gone stale: asking again reads it again, and the change wakes a pass.
        await until_value(cache, kube_namespace, SELECTOR, [("chat-0", "5"), ("chat-1", "3")])
        assert await wakes.next() == (kube_namespace, "demo")
    finally:
        await cache.stop()


async def test_a_failed_read_leaves_the_value_unknown_and_the_cache_working(
    kube_client: Kube, kube_namespace: str, custom_metrics: CustomMetrics
) -> None:
    await chat_pod(kube_client, kube_namespace, "chat-0")
    await set_metric(custom_metrics, kube_namespace, "chat-0", 4)
    wakes = Wakes()
    cache = PodMetricCache(kube_client, METRIC, wakes, max_age=0.2)
    try:
        await until_value(cache, kube_namespace, SELECTOR, [("chat-0", "4")])
        assert await wakes.next() == (kube_namespace, "demo")
        # The API server refuses the next read. The value becomes unknown (never the stale 4,
        # never an empty list that would read as 0 connections), and the pass is told; a read
        # that raised instead would store nothing, and the value would stay 4.
        await until_value(cache, kube_namespace, REFUSED_SELECTOR, None)
        assert await wakes.next() == (kube_namespace, "demo")
        # The cache still reads: the next good read brings the value back.
        await until_value(cache, kube_namespace, SELECTOR, [("chat-0", "4")])
        assert await wakes.next() == (kube_namespace, "demo")
    finally:
        await cache.stop()
