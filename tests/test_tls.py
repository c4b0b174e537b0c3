"""The process loads its CA certificates once (engine/tls.py): each load costs 50-80 ms of CPU,
and every System's connections, token fetch and command client used to load them again."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from engine.commands.remote import HttpRunsClient
from engine.runtime.transport import KeepAliveTransport
from engine.tls import tls_context


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Each CA load from here on (the cached context is dropped first)."""
    seen: list[Any] = []
    load = ssl.SSLContext.load_verify_locations

    def counted(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        seen.append(args or kwargs)
        load(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    tls_context.cache_clear()
    yield seen
    tls_context.cache_clear()


def test_systems_and_clients_share_one_load_of_the_ca_certificates(loads: list[Any]) -> None:
    async def build_and_close() -> None:
        transports = [KeepAliveTransport(connections=4) for _ in range(3)]
        client = HttpRunsClient("https://syncline.example")
        await client.aclose()
        for transport in transports:
            await transport.aclose()

    asyncio.run(build_and_close())
    assert len(loads) == 1  # 4 before: one per System's connections, and one for the client
    assert tls_context() is tls_context()
