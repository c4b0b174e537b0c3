"""The reference project's business events on a real NATS JetStream (127.0.0.1:4222): each
publishing flow of flows/backbone.yaml, run on its own flow test's input, puts its event on the
stream exactly once, although every first acknowledgement is lost (the publish is retried and
JetStream de-duplicates it by its Nats-Msg-Id) and every event is delivered twice (the flow's
idempotency key, the event id, makes the second delivery no run). The demo's subscriber
(engine.demo.published) finds each one once.

The project is a copy of the reference one whose backbone has a stream and subjects of its own,
so tests and a developer's own REVOPS stream on the same server never meet."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import nats
import pytest
from natskit import NATS_URL
from runtime_kit import detail_json

from engine.compiler import compile_project
from engine.compiler.compiled import CompiledSystem
from engine.demo.published import Target, consume, publishing
from engine.runtime import EventMeta, Runtime
from engine.runtime.backbone import Backbone
from engine.runtime.stubs import StubTransport, placeholder_secrets
from engine.store.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = {  # flow -> the subject the reference project publishes its event on
    "publish-order-activated": "revops.order.activated",
    "publish-invoice-paid": "revops.invoice.paid",
    "publish-payment-failed": "revops.invoice.payment-failed",
    "publish-subscription-amended": "revops.subscription.amended",
    "publish-renewal-accepted": "revops.renewal.accepted",
}


@pytest.fixture
def project(tmp_path: Path, backbone: dict[str, str]) -> tuple[Path, str, str]:
    """A copy of the reference project on the real server: (root, stream, subject prefix)."""
    stream, prefix = backbone["stream"], backbone["prefix"]
    root = tmp_path / "reference"
    for name in ("flows", "mappings", "policies", "metrics"):
        shutil.copytree(ROOT / name, root / name)
    shutil.copy(ROOT / "syncline.yaml", root / "syncline.yaml")
    definitions = root / "flows" / "backbone.yaml"
    text = definitions.read_text()
    assert "stream: REVOPS" in text and "${env.NATS_URL}" in text
    definitions.write_text(text.replace("stream: REVOPS", f"stream: {stream}")
                           .replace("${env.NATS_URL}", NATS_URL)
                           .replace("subject: revops.", f"subject: {prefix}."))
    return root, stream, prefix


class LosesFirstAcknowledgements(Backbone):
    """The real backbone, except that the first acknowledgement of each event never arrives:
    JetStream stored the message, the publish step hears nothing and tries again."""

    def __init__(self) -> None:
        super().__init__()
        self.lost: list[str] = []

    async def jetstream(self, system: CompiledSystem, subject: str) -> Any:
        js = await super().jetstream(system, subject)
        lost = self.lost

        class Forgetful:
            async def publish(self, subject: str, payload: bytes, timeout: float = 0,
                              headers: dict[str, str] | None = None) -> Any:
                ack = await js.publish(subject, payload, timeout=timeout, headers=headers)
                ident = (headers or {})["Nats-Msg-Id"]
                if ident not in lost:
                    lost.append(ident)
                    raise nats.errors.TimeoutError
                return ack

        return Forgetful()


async def _messages(stream: str) -> list[Any]:
    client = await nats.connect(NATS_URL)
    try:
        js = client.jetstream()
        info = await js.stream_info(stream)
        return [await js.get_msg(stream, seq)
                for seq in range(info.state.first_seq, info.state.last_seq + 1)]
    finally:
        await client.close()


def test_each_reference_business_event_is_on_the_stream_exactly_once(
        project: tuple[Path, str, str]) -> None:
    root, stream, prefix = project
    plan = compile_project(root, environ={})
    flows = publishing(plan)
    assert set(flows) == set(SUBJECTS)  # every canonical event has its publishing flow
    backbone = LosesFirstAcknowledgements()

    async def scenario() -> dict[str, dict[str, Any]]:
        outputs: dict[str, dict[str, Any]] = {}
        async with SQLiteStore(root / ".syncline" / "syncline.db") as store:
            runtime = Runtime(store, plan, poll=0.05, backbone=backbone,
                              secrets=placeholder_secrets(plan),
                              transport=StubTransport(plan).transport())
            await runtime.start(timers=False)
            try:
                for name in flows:
                    flow = plan.flows[name]
                    event = EventMeta(f"ev-{name}", str(flow.trigger.event), "syncline/test")
                    first = await runtime.ingest(flow, flow.tests[0].input, event)
                    again = await runtime.ingest(flow, flow.tests[0].input, event)
                    assert again.status == "duplicate" and again.run_id == first.run_id
                    run = await runtime.wait(first.run_id, 30)
                    assert run.state == "succeeded", (name, run)
                    detail = await detail_json(runtime, run.id)
                    [published] = [s for s in detail["steps"] if s["id"] in flows[name]]
                    assert len(published["attempts"]) == 2  # the lost acknowledgement: again
                    outputs[name] = published["output"]
            finally:
                await runtime.stop(grace=5)
        return outputs

    outputs = asyncio.run(scenario())
    assert sorted(backbone.lost) == sorted(o["id"] for o in outputs.values())
    assert all(o["duplicate"] for o in outputs.values())  # the retry was stored once

    messages = asyncio.run(_messages(stream))
    by_id = Counter(m.headers["Nats-Msg-Id"] for m in messages)
    assert len(messages) == len(SUBJECTS) and set(by_id.values()) == {1}
    for name, output in outputs.items():
        [message] = [m for m in messages if m.headers["Nats-Msg-Id"] == output["id"]]
        event = json.loads(message.data)
        subject = SUBJECTS[name].replace("revops.", f"{prefix}.")
        assert message.subject == output["subject"] == subject
        assert event["id"] == output["id"] and event["source"] == f"syncline/{name}"
        [expected] = plan.flows[name].tests[0].expect.publishes or []
        assert event["type"] == expected.type and event["data"] == expected.data

    seen = asyncio.run(consume(Target(NATS_URL, stream, tuple(
        s.replace("revops.", f"{prefix}.") for s in SUBJECTS.values())), 1))
    assert Counter(subject for subject, _ in seen) == Counter(
        s.replace("revops.", f"{prefix}.") for s in SUBJECTS.values())
    assert sorted(ident for _, ident in seen) == sorted(o["id"] for o in outputs.values())
