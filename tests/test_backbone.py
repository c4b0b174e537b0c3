"""The NATS JetStream backbone against the real server on 127.0.0.1:4222: `publish` steps (a
CloudEvent per step, stored once however often it is retried), `stream` triggers (acknowledged
only once accepted; a lost acknowledgement redelivers and makes no second run; garbage is
terminated), a backbone that is down, and the compile errors."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.errors import NotFoundError
from natskit import NATS_URL
from projectkit import write_project
from runtime_kit import detail_json, in_state, until

from engine.compiler import compile_project
from engine.errors import DefinitionErrors
from engine.runtime import EventMeta, Runtime
from engine.runtime.executor import Observer
from engine.runtime.streams import Streams
from engine.store.sqlite import SQLiteStore


def _project(root: Path, names: dict[str, str], url: str = NATS_URL) -> Path:
    prefix = names["prefix"]
    return write_project(root, {"flows/backbone.yaml": f"""\
        apiVersion: syncline/v1
        kind: System
        metadata: {{name: backbone, owner: platform}}
        spec:
          nats: {{url: "{url}", stream: {names['stream']}, connectTimeout: 1s}}
          retry: quick
        ---
        apiVersion: syncline/v1
        kind: RetryPolicy
        metadata: {{name: quick, owner: platform}}
        spec: {{maxAttempts: 50, backoff: {{initial: 100ms, max: 200ms}}}}
        ---
        apiVersion: syncline/v1
        kind: Flow
        metadata: {{name: activate, owner: revops}}
        spec:
          trigger: {{event: com.acme.order.requested}}
          steps:
            - id: published
              publish:
                system: backbone
                subject: {prefix}.order.activated
                type: com.acme.order.activated
                data: "{{order: data.id, total: data.total}}"
        ---
        apiVersion: syncline/v1
        kind: Flow
        metadata: {{name: on-activated, owner: finance}}
        spec:
          trigger: {{stream: {{system: backbone, subject: "{prefix}.order.>", ackWait: 1s}}}}
          filter: "data.total != `0`"
          steps:
            - {{id: seen, set: {{order: data.order, type: event.type}}}}
        """})


@asynccontextmanager
async def running(root: Path, **kw: Any) -> AsyncIterator[Runtime]:
    plan = compile_project(root)
    async with SQLiteStore(root / ".syncline" / "syncline.db") as store:
        runtime = Runtime(store, plan, poll=0.05, **kw)
        await runtime.start()
        try:
            yield runtime
        finally:
            await runtime.stop(grace=5)


async def _messages(names: dict[str, str]) -> list[Any]:
    """Every message the stream holds, oldest first."""
    client = await nats.connect(NATS_URL)
    try:
        js = client.jetstream()
        info = await js.stream_info(names["stream"])
        return [await js.get_msg(names["stream"], seq)
                for seq in range(info.state.first_seq, info.state.last_seq + 1)]
    finally:
        await client.close()


async def _runs(runtime: Runtime, flow: str) -> list[Any]:
    from engine.store import RunQuery

    return await runtime.store.list_runs(RunQuery(flow=flow, limit=100))


def test_a_publish_is_a_cloudevent_stored_once_and_a_stream_flow_runs_on_it(
        tmp_path: Path, backbone: dict[str, str]) -> None:
    root = _project(tmp_path, backbone)

    async def scenario() -> None:
        async with running(root) as runtime:
            flow = runtime.plan.flows["activate"]
            accepted = await runtime.ingest(flow, {"id": "O-1", "total": 120},
                                            EventMeta("ev-1", "com.acme.order.requested", "t"))
            run = await runtime.wait(accepted.run_id, 10)
            assert run.state == "succeeded", run
            detail = await detail_json(runtime, run.id)
            assert detail is not None
            output = {s["id"]: s["output"] for s in detail["steps"]}["published"]
            assert output["stream"] == backbone["stream"] and output["duplicate"] is False
            await until(lambda: _count(runtime, "on-activated", "succeeded", 1), 15)
            [downstream] = await _runs(runtime, "on-activated")
            shown = await detail_json(runtime, downstream.id)
            assert shown is not None
            assert {s["id"]: s["output"] for s in shown["steps"]}["seen"] == {
                "order": "O-1", "type": "com.acme.order.activated"}
            # the same step published again (a crash before its checkpoint): stored once
            from engine.runtime.backbone import event_id, publish

            step = flow.step("published")
            again = await publish(runtime.backbone, step, b"{}", output["id"], 5)
            assert again["duplicate"] is True and again["seq"] == output["seq"]
            assert output["id"] == event_id(run.id, "published", run.generation)
        [message] = await _messages(backbone)
        event = json.loads(message.data)
        assert message.headers["Nats-Msg-Id"] == event["id"] == output["id"]
        assert (event["specversion"], event["type"], event["source"]) == (
            "1.0", "com.acme.order.activated", "syncline/activate")
        assert event["data"] == {"order": "O-1", "total": 120}

    asyncio.run(scenario())


async def _count(runtime: Runtime, flow: str, state: str, n: int) -> bool:
    return sum(1 for r in await _runs(runtime, flow) if r.state == state) >= n


async def _publish_raw(names: dict[str, str], subject: str, body: bytes,
                       msg_id: str | None = None) -> None:
    client = await nats.connect(NATS_URL)
    try:
        js = client.jetstream()
        try:
            await js.stream_info(names["stream"])
        except NotFoundError:
            await js.add_stream(name=names["stream"], subjects=[f"{names['prefix']}.>"])
        await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id} if msg_id else None)
    finally:
        await client.close()


def _event(n: int, total: int = 10) -> bytes:
    return json.dumps({"specversion": "1.0", "id": f"ce-{n}", "source": "erp", "type":
                       "com.acme.order.activated", "data": {"order": f"O-{n}", "total": total}
                       }).encode()


class Counting(Observer):
    def __init__(self) -> None:
        self.outcomes: list[tuple[str, str]] = []

    def delivery(self, route: str, outcome: str) -> None:
        self.outcomes.append((route.removeprefix("stream:"), outcome))


def test_a_lost_acknowledgement_redelivers_and_makes_no_second_run(
        tmp_path: Path, backbone: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = _project(tmp_path, backbone)
    subject = f"{backbone['prefix']}.order.activated"
    lost: list[str] = []
    acknowledge = Streams.acknowledge

    async def lose_first(self: Streams, message: Any) -> None:
        if not lost:  # the process "crashed" after storing the event, before acknowledging
            lost.append(message.subject)
            return
        await acknowledge(self, message)

    monkeypatch.setattr(Streams, "acknowledge", lose_first)

    async def scenario() -> None:
        observer = Counting()
        await _publish_raw(backbone, subject, _event(1))
        async with running(root, observer=observer) as runtime:
            await until(lambda: ("on-activated", "duplicate") in observer.outcomes, 20)
            runs = await _runs(runtime, "on-activated")
            assert len(runs) == 1 and await in_state(runtime, runs[0].id, "succeeded")
        assert observer.outcomes[:2] == [("on-activated", "accepted"),
                                         ("on-activated", "duplicate")]
        client = await nats.connect(NATS_URL)
        try:
            info = await client.jetstream().consumer_info(backbone["stream"],
                                                           "syncline-on-activated")
            assert info.num_ack_pending == 0 and info.num_pending == 0
        finally:
            await client.close()

    asyncio.run(scenario())


def test_garbage_is_terminated_filtered_is_acknowledged_and_both_counted(
        tmp_path: Path, backbone: dict[str, str]) -> None:
    root = _project(tmp_path, backbone)
    subject = f"{backbone['prefix']}.order.activated"

    async def scenario() -> None:
        observer = Counting()
        await _publish_raw(backbone, subject, b"not json")
        await _publish_raw(backbone, subject, b'{"id": "x", "data": {}}')  # no specversion...
        await _publish_raw(backbone, subject, _event(2, total=0))  # the flow's filter says no
        await _publish_raw(backbone, subject, _event(3))
        async with running(root, observer=observer) as runtime:
            await until(lambda: len(observer.outcomes) >= 4, 20)
            await asyncio.sleep(1.5)  # past ackWait: a terminated message is not redelivered
            assert sorted(o for _, o in observer.outcomes) == [
                "accepted", "filtered", "rejected", "rejected"]
            runs = await _runs(runtime, "on-activated")
            assert [r.state for r in runs if r.state != "filtered"] == ["succeeded"]

    asyncio.run(scenario())


def test_a_backbone_that_is_down_makes_the_publish_wait_and_retry(
        tmp_path: Path, backbone: dict[str, str]) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there
    root = _project(tmp_path, backbone, url=f"nats://127.0.0.1:{port}")

    async def scenario() -> None:
        async with running(root) as runtime:
            flow = runtime.plan.flows["activate"]
            accepted = await runtime.ingest(flow, {"id": "O-9", "total": 5},
                                            EventMeta("ev-9", "com.acme.order.requested", "t"))
            await until(lambda: in_state(runtime, accepted.run_id, "waiting"), 15)
            detail = await detail_json(runtime, accepted.run_id)
            assert detail is not None
            [step] = [s for s in detail["steps"] if s["id"] == "published"]
            attempt = step["attempts"][0]
            assert attempt["outcome"] == "network"
            assert "cannot reach the backbone to publish to" in attempt["error"]
            assert attempt["request"]["method"] == "PUBLISH"

    asyncio.run(scenario())


@pytest.mark.parametrize(("change", "message"), [
    (("system: backbone\n        subject", "system: erp\n        subject"),
     "system 'erp' is an HTTP API; a step can only publish to a System with a `nats` block"),
    (("{stream: {system: backbone", "{stream: {system: erp"),
     "system 'erp' is an HTTP API; a step can only stream from a System with a `nats` block"),
    (("subject: {prefix}.order.activated", "subject: bad subject"),
     "spec.steps[0].publish.subject"),
])
def test_backbone_mistakes_are_located_compile_errors(
        tmp_path: Path, change: tuple[str, str], message: str) -> None:
    names = {"stream": "S", "prefix": "p"}
    root = _project(tmp_path, names)
    text = (root / "flows" / "backbone.yaml").read_text()
    old, new = change
    old = old.replace("{prefix}", "p")
    assert old in text
    (root / "flows" / "backbone.yaml").write_text(text.replace(old, new) + """\
---
apiVersion: syncline/v1
kind: System
metadata: {name: erp, owner: finance}
spec: {baseUrl: "http://127.0.0.1:9"}
""")
    with pytest.raises(DefinitionErrors) as caught:
        compile_project(root)
    assert message in str(caught.value)


def test_first_publishes_to_new_subjects_at_once_are_all_captured(
        tmp_path: Path, backbone: dict[str, str]) -> None:
    """Each first publish to a subject adds it to the stream: done at once (five business events
    of a busy minute), no update may drop another's subject."""
    from engine.runtime.backbone import Backbone

    plan = compile_project(_project(tmp_path, backbone))
    [system] = [s for s in plan.systems.values() if s.nats is not None]
    subjects = [f"{backbone['prefix']}.event{i}" for i in range(5)]

    async def scenario() -> list[str]:
        connections = Backbone()
        try:
            await connections.jetstream(system, f"{backbone['prefix']}.first")  # the stream
            await asyncio.gather(*(connections.jetstream(system, s) for s in subjects))
            client = await nats.connect(NATS_URL)
            try:
                info = await client.jetstream().stream_info(backbone["stream"])
                return list(info.config.subjects or [])
            finally:
                await client.close()
        finally:
            await connections.aclose()

    assert set(subjects) <= set(asyncio.run(scenario()))
