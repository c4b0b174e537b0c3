"""The HTTP edge against hostile clients, through a real socket: oversized heads (431), stalled
heads and bodies, unsigned requests that must cost no admission slot, and 413 answers that the
sender actually receives (no connection reset while it is still writing)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverkit import SECRETS, LiveServer, write_project
from test_server_ingest import post_crm, standard

from engine.commands.runs import store_path
from engine.compiler import compile_project
from engine.runtime import EventMeta, Runtime
from engine.server.http import dumps
from engine.store.sqlite import SQLiteStore


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    project = write_project(tmp_path_factory.mktemp("edge"))
    with LiveServer(project, max_body=64 * 1024, max_pending=2, body_timeout=0.5,
                    head_timeout=0.5) as live:
        yield live


def _raw(server: LiveServer, data: bytes, *, wait: float = 5.0) -> bytes:
    """Send `data` on a fresh connection; what the server answers before closing (or `wait`)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        return _answer(sock)


def _status_line(sock: socket.socket) -> bytes:
    received = b""
    while b"\r\n" not in received and (chunk := sock.recv(4096)):
        received += chunk
    return received.split(b"\r\n", 1)[0]


def _answer(sock: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def test_an_oversized_header_or_request_line_is_431(server: LiveServer) -> None:
    header = b"POST /hooks/crm HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (1024 * 1024) + b"\r\n\r\n"
    assert _raw(server, header).startswith(b"HTTP/1.1 431 ")
    line = b"GET /" + b"a" * (1024 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert _raw(server, line).startswith(b"HTTP/1.1 431 ")
    with server.client() as client:      # the server goes on
        assert client.get("/healthz").status_code == 200


def _stalled_delivery(server: LiveServer, signed: bool) -> socket.socket:
    body = b'{"id": "stall"}'
    headers = standard(body, "stall") if signed else {"content-type": "application/json"}
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(f"POST /hooks/crm HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n{head}\r\n"
                 .encode() + b"{")
    return sock


def test_unsigned_stalled_requests_take_no_slot_and_signed_ones_time_out(
        server: LiveServer) -> None:
    unsigned = [_stalled_delivery(server, signed=False) for _ in range(3)]
    signed = [_stalled_delivery(server, signed=True) for _ in range(2)]  # both slots taken
    started = time.monotonic()
    try:
        for sock in unsigned:    # refused on their headers, before any body byte is awaited
            assert b" 401 " in _status_line(sock)
        for sock in signed:
            assert _status_line(sock) == b""   # closed at the deadline: their slots are freed
    finally:
        for sock in unsigned + signed:
            sock.close()
    assert time.monotonic() - started < 5
    with server.client() as client:
        assert post_crm(client, {"id": "after-stall"}, "after-stall").status_code == 202


def _stalled(server: LiveServer, path: str, headers: dict[str, str],
             length: int = 60000) -> socket.socket:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n{head}\r\n"
                 .encode() + b"{")
    return sock


@pytest.mark.parametrize(("path", "headers", "length", "status"), [
    ("/events", {"content-type": "application/json"}, 60000, b" 415 "),        # no event mode
    ("/events", {"content-type": "application/cloudevents+xml"}, 60000, b" 415 "),
    ("/events", {"content-type": "application/cloudevents+json"}, 10**9, b" 413 "),
    ("/api/quote", {"content-type": "text/plain"}, 60000, b" 415 "),
    ("/api/quote", {"content-type": "application/json"}, 10**9, b" 413 "),
])
def test_events_and_process_apis_refuse_on_their_headers_without_a_slot(
        server: LiveServer, path: str, headers: dict[str, str], length: int,
        status: bytes) -> None:
    held = [_stalled(server, "/events", {"content-type": "application/cloudevents+json"})
            for _ in range(2)]  # both admission slots taken by senders that stall
    try:
        time.sleep(0.1)  # let the server admit them (a refusal below must not be a 503)
        refused = [_stalled(server, path, headers, length) for _ in range(3)]
        try:
            for sock in refused:  # answered at once, before any body byte is awaited
                assert status in _status_line(sock)
        finally:
            for sock in refused:
                sock.close()
        for sock in held:  # closed at the body deadline: their slots are freed
            assert _status_line(sock) in (b"", b"HTTP/1.1 408 Request Timeout")
    finally:
        for sock in held:
            sock.close()
    with server.client() as client:
        answer = post_crm(client, {"id": f"after-{path}"}, f"after-{path}-{length}")
        assert answer.status_code == 202


def test_an_oversized_body_gets_its_413_not_a_reset(server: LiveServer) -> None:
    body = b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    for n in range(10):
        request = urllib.request.Request(f"{server.url}/hooks/crm", data=body, method="POST",
                                         headers=standard(body, f"big-{n}"))
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        caught.value.close()
        assert caught.value.code == 413




def test_a_stalled_request_head_is_closed(server: LiveServer) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /hooks/crm HTTP/1.1\r\nHost: x\r\nX-Slow: a")   # never finished
        assert _answer(sock) == b""    # closed without an answer
    assert time.monotonic() - started < 5


def test_an_answer_holding_a_lone_surrogate_is_still_json() -> None:
    # runs stored before ingest refused such bodies must still be readable (was a 500)
    assert json.loads(dumps({"name": "a\ud800b", "big": 2**70})) == {"name": "a\ud800b",
                                                                     "big": 2**70}


def test_a_run_stored_with_a_lone_surrogate_answers_every_read_and_action(tmp_path: Path) -> None:
    # Such a body is refused at ingest now; a run stored before must still be operable.
    project = write_project(tmp_path)

    async def seed() -> str:
        plan = compile_project(project, environ={})
        async with SQLiteStore(store_path(project)) as store:
            runtime = Runtime(store, plan, secrets=SECRETS, poll=0.05)
            await runtime.start()
            try:
                meta = EventMeta(id="sur-1", type="webhook:/hooks/crm", source="crm")
                data = {"id": "sur-1", "name": "a\ud800b"}
                accepted = await runtime.ingest(plan.flows["crm-order"], data, meta)
                await runtime.wait(accepted.run_id, 10)
                return accepted.run_id
            finally:
                await runtime.stop(grace=5)

    run_id = asyncio.run(seed())
    with LiveServer(project) as live, live.client() as http:
        detail = http.get(f"/api/v1/runs/{run_id}")
        assert detail.status_code == 200, detail.text
        assert detail.json()["event"]["data"]["name"] == "a\ud800b"
        assert http.get("/api/v1/runs").status_code == 200
        for action in ("retry", "replay"):
            answer = http.post(f"/api/v1/runs/{run_id}/{action}")
            assert answer.status_code in (200, 202, 409), answer.text
