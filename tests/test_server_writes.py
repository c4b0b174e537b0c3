"""The server's transport wrapper (engine/server/protocol.py) sends what one turn of the event
loop writes in one write: uvicorn writes a response's head and body separately."""

from __future__ import annotations

import asyncio

from engine.server.protocol import BoundedHttpToolsProtocol, _LingeringTransport


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def wrapped() -> tuple[Recorder, _LingeringTransport]:
    real = Recorder()
    protocol = BoundedHttpToolsProtocol.__new__(BoundedHttpToolsProtocol)
    return real, _LingeringTransport(real, protocol)  # type: ignore[arg-type]


def test_a_turn_s_writes_go_out_as_one() -> None:
    async def main() -> list[bytes]:
        real, transport = wrapped()
        transport.write(b"HTTP/1.1 202 Accepted\r\n\r\n")
        transport.write(b'{"status":"accepted"}')
        assert real.writes == []  # held until the end of this turn
        await asyncio.sleep(0)
        transport.write(b"next")
        await asyncio.sleep(0)
        return real.writes

    assert asyncio.run(main()) == [b'HTTP/1.1 202 Accepted\r\n\r\n{"status":"accepted"}', b"next"]


def test_closing_sends_what_is_held_first() -> None:
    async def main() -> tuple[list[bytes], bool]:
        real, transport = wrapped()
        transport._protocol._in_head = True  # no request body arriving: close at once
        transport.write(b"HTTP/1.1 431 ...")
        transport.close()
        await asyncio.sleep(0)  # the scheduled flush finds nothing left to send
        return real.writes, real.closed

    assert asyncio.run(main()) == ([b"HTTP/1.1 431 ..."], True)
