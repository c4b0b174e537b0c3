"""What the day put on the event backbone, and whether each business event arrived once.

- Sent: every run of a publishing flow (a flow with a `publish` step) and the CloudEvent id its
  publish step sent (the step's output, read through the admin API as an operator would).
- Arrived: a subscriber reads each published subject of the stream with an ephemeral pull
  consumer, from where the stream stood before the day (`mark`, so a shared server's older
  messages do not count), and notes each message's subject and CloudEvent id. With the
  in-memory backbone (no NATS server) its record of what it stored stands in.
- `check`: each sent event arrived exactly once (JetStream de-duplicates a retried publish by
  its Nats-Msg-Id; a second copy would be a second message), and every publishing run finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from engine.compiler.compiled import PublishAction
from engine.compiler.plan import Plan
from engine.demo.backbone import DemoBackbone
from engine.demo.reconcile import Reconciliation
from engine.runtime.backbone import matches

BATCH = 256  # messages a fetch asks for
FETCH_TIMEOUT = 2.0  # seconds a fetch waits for the first message


@dataclass(frozen=True)
class Target:
    """Where a project's publish steps send: one stream of one server, and its subjects."""

    url: str
    stream: str
    subjects: tuple[str, ...]


@dataclass
class Tally:
    """What was sent (event id -> (subject, flow, run id)) and what arrived ((subject, id)s)."""

    sent: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    unfinished: list[tuple[str, str, str]] = field(default_factory=list)  # (flow, run, state)
    arrived: list[tuple[str, str]] = field(default_factory=list)


def publishing(plan: Plan) -> dict[str, tuple[str, ...]]:
    """Flow name -> the ids of its publish steps, for each flow that publishes."""
    found = {name: tuple(s.id for s in flow.steps if s.kind == "publish")
             for name, flow in plan.flows.items()}
    return {name: ids for name, ids in found.items() if ids}


def targets(plan: Plan, url: str) -> list[Target]:
    """The streams the plan's publish steps send to, each with its subjects (`url`: the
    backbone the demo runs, which the plan's NATS_URL names)."""
    subjects: dict[str, set[str]] = {}
    for flow in plan.flows.values():
        for step in flow.steps:
            if isinstance(step.action, PublishAction) and step.action.system.nats is not None:
                stream = step.action.system.nats.stream
                subjects.setdefault(stream, set()).add(step.action.subject)
    return [Target(url, stream, tuple(sorted(s))) for stream, s in sorted(subjects.items())]


async def mark(backbone: DemoBackbone, plan: Plan) -> dict[str, int]:
    """Stream -> its last sequence number now (0: no such stream yet), before the day."""
    if not backbone.real:
        return {}
    marks = {}
    client = await nats.connect(backbone.url)
    try:
        js = client.jetstream()
        for target in targets(plan, backbone.url):
            try:
                marks[target.stream] = (await js.stream_info(target.stream)).state.last_seq
            except NotFoundError:
                marks[target.stream] = 0
    finally:
        await client.close()
    return marks


async def tally(backbone: DemoBackbone, plan: Plan, marks: Mapping[str, int],
                client: httpx.AsyncClient, runs: Iterable[Mapping[str, Any]]) -> Tally:
    """What the day's publishing runs sent, and what a subscriber finds on the backbone."""
    result = Tally()
    steps = publishing(plan)
    chosen = [r for r in runs if r["flow"] in steps and r["state"] != "filtered"]
    gate = asyncio.Semaphore(8)

    async def sent(run: Mapping[str, Any]) -> None:
        if run["state"] != "succeeded":
            result.unfinished.append((run["flow"], run["id"], run["state"]))
            return
        async with gate:
            response = await client.get(f"/api/v1/runs/{run['id']}")
        detail = response.raise_for_status().json()
        for step in detail["steps"]:
            output = step.get("output") or {}
            if step["id"] in steps[run["flow"]] and output.get("id"):
                result.sent[output["id"]] = (output["subject"], run["flow"], run["id"])

    await asyncio.gather(*(sent(run) for run in chosen))
    if backbone.memory is not None:
        result.arrived = [(s, str(e.get("id"))) for s, e in backbone.memory.published]
    else:
        for target in targets(plan, backbone.url):
            result.arrived += await consume(target, marks.get(target.stream, 0) + 1)
    return result


async def consume(target: Target, start: int) -> list[tuple[str, str]]:
    """(subject, CloudEvent id) of every message on `target`'s subjects from sequence `start`."""
    client = await nats.connect(target.url)
    seen: list[tuple[str, str]] = []
    try:
        js = client.jetstream()
        try:
            info = await js.stream_info(target.stream)
        except NotFoundError:
            return seen  # nothing was ever published
        captured = list(info.config.subjects or [])
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                opt_start_seq=start, ack_policy=AckPolicy.EXPLICIT,
                                inactive_threshold=60.0)
        for subject in target.subjects:
            if not any(matches(pattern, subject) for pattern in captured):
                continue  # never published to: the stream does not capture it yet
            subscription = await js.pull_subscribe(subject, stream=target.stream, config=config)
            try:
                seen += await _drain(subscription)
            finally:
                with contextlib.suppress(nats.errors.Error):
                    await subscription.unsubscribe()
    finally:
        await client.close()
    return seen


async def _drain(subscription: Any) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    while True:
        try:
            messages = await subscription.fetch(BATCH, timeout=FETCH_TIMEOUT)
        except nats.errors.TimeoutError:
            return seen  # nothing (more) on this subject
        for message in messages:
            seen.append((message.subject, _event_id(message.data)))
            await message.ack()
        if messages[-1].metadata.num_pending == 0:
            return seen


def _event_id(payload: bytes) -> str:
    try:
        return str(json.loads(payload).get("id"))
    except (ValueError, AttributeError):
        return "(not a CloudEvent)"


def check(result: Reconciliation, found: Tally) -> None:
    """Each sent business event is on the backbone exactly once; every publishing run finished."""
    copies = Counter(ident for _, ident in found.arrived)
    for ident, (subject, flow, run) in sorted(found.sent.items()):
        n = copies.get(ident, 0)
        result.check("business event on the backbone once", n == 1,
                     f"backbone: {subject} event {ident} ({flow} run {run}) arrived {n} times")
    for flow, run, state in found.unfinished:
        result.check("business event on the backbone once", False,
                     f"backbone: {flow} run {run} is {state}: its event was not published")


def summary(backbone: DemoBackbone, found: Tally) -> dict[str, Any]:
    """The report's `backbone` section."""
    ours = [(s, i) for s, i in found.arrived if i in found.sent]
    copies = Counter(i for _, i in ours)
    return {
        "kind": backbone.kind,
        "url": backbone.url if backbone.real else None,
        "note": backbone.note,
        "published": len(found.sent),
        "by_subject": dict(sorted(Counter(s for s, _, _ in found.sent.values()).items())),
        "arrived": dict(sorted(Counter(s for s, _ in ours).items())),
        "duplicates": sum(n - 1 for n in copies.values() if n > 1),
        "missing": sum(1 for i in found.sent if i not in copies),
        "unfinished": len(found.unfinished),
        "others": len(found.arrived) - len(ours),  # not this day's (a shared server)
    }


def backbone_lines(section: Mapping[str, Any] | None) -> list[str]:
    """The report's text about the backbone."""
    if not section:
        return []
    arrived = ", ".join(f"{s} {n}" for s, n in section["arrived"].items()) or "none"
    where = ("found on the stream by a subscriber" if section["url"]
             else "recorded by the in-memory backbone")
    return [
        f"Event backbone: {section['note']}",
        f"  {section['published']} business events published; {where}: {arrived}",
        f"  each once: {section['duplicates']} duplicates, {section['missing']} missing, "
        f"{section['unfinished']} publishing runs unfinished",
        "",
    ]
