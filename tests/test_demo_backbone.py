"""`syncline demo` and its event backbone when there is no NATS server to be had, and the demo's
own proof that each business event arrived once (its subscriber and its check).

The demo with a real JetStream (its own nats-server, or NATS_URL) is tests/test_demo.py's
command test; the reference project's publishes on the real server are
tests/test_backbone_reference.py."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import nats
import pytest
from natskit import NATS_URL

from engine.demo.backbone import DemoBackbone
from engine.demo.published import Tally, Target, check, consume, summary
from engine.demo.reconcile import Reconciliation


def _demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The demo with nothing on PATH (so no nats-server) and no NATS_URL."""
    (tmp_path / "bin").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    env["PATH"] = str(tmp_path / "bin")
    return subprocess.run([sys.executable, "-m", "engine.cli", "demo", "--events", "4", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.slow
def test_without_a_nats_server_the_demo_says_so_and_counts_in_memory(tmp_path: Path) -> None:
    done = _demo(tmp_path, "--format", "json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert ("[demo] event backbone: in memory (NATS_URL is not set and no nats-server is on "
            "PATH): events are published and counted, not sent to NATS") in done.stderr
    report = json.loads(done.stdout)
    backbone = report["backbone"]
    assert backbone["kind"] == "in-memory" and backbone["url"] is None
    # the smallest day: 4 orders activated, each invoice paid, 1 amendment, 1 renewal
    assert backbone["by_subject"]["revops.order.activated"] == 4
    assert backbone["by_subject"]["revops.invoice.paid"] == report["day"]["invoices paid"] >= 1
    assert backbone["arrived"] == backbone["by_subject"]
    assert (backbone["duplicates"], backbone["missing"], backbone["unfinished"]) == (0, 0, 0)
    assert report["reconciliation"]["ok"], report["reconciliation"]["problems"]


def test_backbone_nats_without_a_server_is_a_usage_error(tmp_path: Path) -> None:
    done = _demo(tmp_path, "--backbone", "nats")
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert ("error: --backbone nats: NATS_URL is not set and no nats-server is on PATH; "
            "install nats-server") in done.stderr


def test_the_check_reports_a_duplicate_a_missing_and_an_unfinished_event() -> None:
    found = Tally(
        sent={"e1": ("revops.order.activated", "publish-order-activated", "r1"),
              "e2": ("revops.invoice.paid", "publish-invoice-paid", "r2"),
              "e3": ("revops.invoice.paid", "publish-invoice-paid", "r3")},
        unfinished=[("publish-renewal-accepted", "r4", "waiting")],
        arrived=[("revops.order.activated", "e1"), ("revops.invoice.paid", "e2"),
                 ("revops.invoice.paid", "e2"), ("revops.other", "x9")],
    )
    result = Reconciliation()
    check(result, found)
    assert result.checked["business event on the backbone once"] == 4
    assert result.problems == [
        "backbone: revops.invoice.paid event e2 (publish-invoice-paid run r2) arrived 2 times",
        "backbone: revops.invoice.paid event e3 (publish-invoice-paid run r3) arrived 0 times",
        "backbone: publish-renewal-accepted run r4 is waiting: its event was not published",
    ]
    shown = summary(DemoBackbone("NATS_URL", NATS_URL, "NATS_URL"), found)
    assert (shown["duplicates"], shown["missing"], shown["unfinished"], shown["others"]) == (
        1, 1, 1, 1)
    assert shown["arrived"] == {"revops.invoice.paid": 2, "revops.order.activated": 1}


def test_the_subscriber_sees_a_second_copy_jetstream_was_not_told_to_drop(
        backbone: dict[str, str]) -> None:
    """Published twice without a Nats-Msg-Id, an event is two messages: the subscriber counts
    both (so its "once" is JetStream's de-duplication, not its own), from the start it is given."""
    stream, subject = backbone["stream"], f"{backbone['prefix']}.order.activated"

    async def scenario() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        client = await nats.connect(NATS_URL)
        js = client.jetstream()
        try:
            await js.add_stream(name=stream, subjects=[subject])
            await js.publish(subject, b'{"id": "before-the-day"}')
            for _ in range(2):
                await js.publish(subject, json.dumps({"id": "e1", "type": "t"}).encode())
            target = Target(NATS_URL, stream, (subject, f"{backbone['prefix']}.never.published"))
            return await consume(target, 2), await consume(target, 1)
        finally:
            await client.close()

    from_the_day, everything = asyncio.run(scenario())
    assert from_the_day == [(subject, "e1"), (subject, "e1")]
    assert everything == [(subject, "before-the-day"), *from_the_day]
    result = Reconciliation()
    check(result, Tally(sent={"e1": (subject, "f", "r1")}, arrived=from_the_day))
    assert result.problems == [f"backbone: {subject} event e1 (f run r1) arrived 2 times"]
