"""The Python stand-in for bench/loadgen: same plan, same JSON-line events, Hypersend only.

bench/side_by_side.py uses it for --smoke (CI builds no Go program): each user is a
hypersend_client.Client (clients/python). It is far slower than the Go generator, so its figures
prove the harness, not the servers. It reports no bytes per frame (the client hides frames).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients" / "python"))

from hypersend_client import Client, CloseError, HypersendError, events


@dataclass
class Phase:
    sent: int = 0
    expected: int = 0
    acked: int = 0
    delivered: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    # deliveries still due per message (by its send timestamp); complete ones are removed
    outstanding: dict[int, int] = field(default_factory=dict)
    duplicates: int = 0
    # an earlier workload's messages (older than this driver) that a gap fill delivered
    earlier: int = 0


class Driver:
    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.phases: dict[int, Phase] = {}
        self.current = 0
        self.started_ns = time.time_ns()
        self.closed: dict[str, int] = {}
        self.clients: list[tuple[Client, dict[str, str]]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def phase(self, index: int) -> Phase:
        return self.phases.setdefault(index, Phase())

    def emit(self, event: dict[str, Any]) -> None:
        print(json.dumps(event), flush=True)

    def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.MessageEvent):
            head = event.message.text.split(" ", 2)
            if len(head) == 3 and head[0].isdigit() and head[1].isdigit():
                phase, sent = self.phase(int(head[1])), int(head[0])
                if sent < self.started_ns:
                    # Not this run's, and no delivery: that would let settle end with a
                    # message still missing (bench/loadgen/main.go, delivery).
                    self.phase(self.current).earlier += 1
                    return
                due = phase.outstanding.pop(sent, 0)
                if due == 0:
                    phase.duplicates += 1  # a second copy
                    return
                phase.delivered += 1
                phase.latencies_ms.append((time.time_ns() - sent) / 1e6)
                if due > 1:
                    phase.outstanding[sent] = due - 1
        elif isinstance(event, events.ServerError):
            errors = self.phase(self.current).errors
            errors[event.code] = errors.get(event.code, 0) + 1
        elif isinstance(event, events.Reconnecting | events.Disconnected):
            error = event.error
            if error is not None:
                code = str(error.close_code if isinstance(error, CloseError) else 1006)
                self.closed[code] = self.closed.get(code, 0) + 1

    async def connect(self) -> None:
        plan = self.plan
        base = "http" + plan["url"].removeprefix("ws").removesuffix("/ws")
        gate = asyncio.Semaphore(plan["connect_concurrency"])
        failures: dict[str, int] = {}
        started = time.monotonic()

        async def one(user: dict[str, str]) -> None:
            client = Client(base, ws_url=plan["url"], start_from="live", on_event=self.on_event)
            client.rest.use_tokens(user["token"], "", expires_in=7200)
            async with gate:
                try:
                    await client.start()
                except HypersendError as exc:
                    failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                    await client.close()
                    return
            self.clients.append((client, user))

        tasks = [asyncio.create_task(one(u)) for u in plan["users"]]
        _, late = (
            await asyncio.wait(tasks, timeout=plan["connect_timeout_s"]) if tasks else ((), ())
        )
        for task in late:
            task.cancel()
        if late:
            failures["connect timeout"] = len(late)
        seconds = time.monotonic() - started
        self.emit(
            {
                "event": "connected",
                "connected": len(self.clients),
                "wanted": len(plan["users"]),
                "seconds": seconds,
                "rate": len(self.clients) / max(seconds, 1e-9),
                "failures": failures,
            }
        )

    async def send(self, client: Client, room: str, text: str, phase: Phase) -> None:
        try:
            await client.send(room, text)
        except HypersendError as exc:
            code = str(getattr(exc, "code", type(exc).__name__))
            phase.errors[code] = phase.errors.get(code, 0) + 1
            return
        phase.acked += 1

    async def schedule(self, rate: float, index: int, seconds: float) -> tuple[float, float]:
        """Poisson sends at `rate` for `seconds`: (seconds taken, worst lag behind schedule)."""
        members: dict[str, int] = {}
        for _, user in self.clients:
            members[user["room"]] = members.get(user["room"], 0) + 1
        phase = self.phase(index)
        padding = self.plan["text_bytes"]
        started = time.monotonic()
        at = started
        lag = 0.0
        while True:
            at += random.expovariate(rate)
            if at - started > seconds:
                break
            wait = at - time.monotonic()
            lag = max(lag, -wait)
            await asyncio.sleep(max(0.0, wait))
            client, user = random.choice(self.clients)
            sent = time.time_ns()
            head = f"{sent} {index} "
            text = head + "x" * max(0, padding - len(head))
            phase.sent += 1
            phase.expected += members[user["room"]]
            phase.outstanding[sent] = members[user["room"]]
            task = asyncio.create_task(self.send(client, user["room"], text, phase))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return time.monotonic() - started, lag

    async def settle(self, index: int, within: float) -> None:
        """Wait until every expected delivery of the phase arrived and every send was answered
        (ack or error), or `within` passed."""
        deadline = time.monotonic() + within
        phase = self.phase(index)

        def done() -> bool:
            answered = phase.acked + sum(phase.errors.values())
            return phase.delivered >= phase.expected and answered >= phase.sent

        while time.monotonic() < deadline and not done():  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    def summary(self, index: int, seconds: float) -> dict[str, Any]:
        phase = self.phase(index)
        lat = sorted(phase.latencies_ms)

        def pct(q: float) -> float | None:
            return lat[min(len(lat) - 1, round(q / 100 * (len(lat) - 1)))] if lat else None

        return {
            "sent": phase.sent,
            "expected": phase.expected,
            "acked": phase.acked,
            "delivered": phase.delivered,
            "errors": phase.errors,
            "seconds": seconds,
            "delivery_bytes": 0,
            "p50_ms": pct(50),
            "p99_ms": pct(99),
            "max_ms": pct(100),
            "closed": self.closed,
            "incomplete_messages": len(phase.outstanding),
            "duplicates": phase.duplicates,
            "earlier_messages": phase.earlier,
        }

    async def run(self) -> None:
        plan = self.plan
        await self.connect()
        if not self.clients:
            self.emit({"event": "error", "error": "no socket connected"})
            return
        mode = plan["mode"]
        if mode == "idle":
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), plan["hold_s"])
            self.emit({"event": "result", "closed": self.closed})
        elif mode == "load":
            await asyncio.sleep(plan["warmup_s"])
            self.current = 1
            self.emit({"event": "measure_start"})
            started = time.monotonic()
            send_seconds, lag = await self.schedule(plan["rate"], 1, plan["duration_s"])
            await self.settle(1, plan["settle_s"])
            self.emit({"event": "measure_end"})
            result = self.summary(1, time.monotonic() - started)
            self.emit(
                {
                    "event": "result",
                    "schedule_lag_ms": lag * 1000,
                    "send_seconds": send_seconds,
                    **result,
                }
            )
        else:
            ramp = plan["ramp"]
            await asyncio.sleep(plan["warmup_s"])
            self.emit({"event": "measure_start"})
            best, rate, capped = 0.0, ramp["start_rate"], True
            for step in range(1, ramp["max_steps"] + 1):
                if rate > ramp["max_rate"]:
                    break
                self.current = step
                started, cpu_started = time.monotonic(), time.process_time()
                seconds, lag = await self.schedule(rate, step, ramp["step_s"])
                await self.settle(step, ramp["within_s"] + 0.5)
                cores = (time.process_time() - cpu_started) / (time.monotonic() - started)
                res = self.summary(step, seconds)
                # The driver was the limit: a failure then says nothing about the server.
                driver_bound = cores >= 0.9 or lag > 0.25
                ok = (
                    res["expected"] > 0
                    and res["delivered"] >= res["expected"]
                    and not res["errors"]
                    and (res["max_ms"] or 0) <= ramp["within_s"] * 1000
                )
                self.emit(
                    {
                        "event": "step",
                        "rate": rate,
                        "schedule_lag_ms": lag * 1000,
                        "driver_cores": cores,
                        "driver_bound": driver_bound,
                        "ok": ok,
                        **res,
                    }
                )
                if not ok:
                    capped = driver_bound
                    break
                best, rate = rate, rate * ramp["factor"]
            self.emit({"event": "measure_end"})
            self.emit({"event": "result", "best_rate": best, "capped": capped})
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*(client.close() for client, _ in self.clients))
        self.emit({"event": "done"})


async def main(plan: dict[str, Any]) -> int:
    if plan["protocol"] != "hypersend":
        print(json.dumps({"event": "error", "error": "the Python driver speaks Hypersend only"}))
        return 2
    try:
        await asyncio.wait_for(Driver(plan).run(), plan["deadline_s"])
    except TimeoutError:
        print(json.dumps({"event": "error", "error": f"deadline of {plan['deadline_s']}s"}))
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(json.loads(Path(sys.argv[1]).read_text()))))
