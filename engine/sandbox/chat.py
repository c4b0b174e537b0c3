"""Chat sandbox: a Slack-like incoming-webhook API that records the messages it receives, for
alerts to reach a team.

``POST /hooks/{channel}`` with ``{"text": "...", "username"?, "icon_emoji"?, "blocks"?}`` posts a
message to the channel (any channel name; a real workspace gives each webhook URL its own) and
answers 200 ``{"ok": true, "channel", "ts"}``; a message without ``text`` (and without
``blocks``) is 400 ``no_text``, a text over 40,000 characters 400 ``msg_too_long`` (Slack's
limits). ``GET /channels/{channel}/messages`` and ``GET /messages?channel=`` list what was
posted, oldest first. Like Slack's incoming webhooks it does not deduplicate: a message sent
twice is shown twice (an Idempotency-Key header is honoured like on every sandbox, but Slack has
none, so the reference project sends none). Faults on demand as on every sandbox
(``POST /sandbox/faults {"status": 503, "count": 2, "path_prefix": "/hooks"}``).

Run standalone: ``python -m engine.sandbox.chat --port 9105``.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette

from engine.sandbox.common import Call, Handler, Reply, bad_request, iso_now
from engine.sandbox.serving import run_standalone
from engine.sandbox.system import SandboxConfig, SandboxSystem

MAX_TEXT = 40_000


class ChatSandbox(SandboxSystem):
    name = "chat"
    config_class = SandboxConfig
    collections = ("messages",)

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/hooks/{channel}", self.post_message),
            ("GET", "/channels/{channel}/messages", self.channel_messages),
            ("GET", "/messages", self.list_messages),
        ]

    def post_message(self, call: Call) -> Reply:
        body = call.json_object()
        text, blocks = body.get("text"), body.get("blocks")
        if not (isinstance(text, str) and text.strip()) and not blocks:
            raise bad_request("no_text", "a message needs text (or blocks)")
        if isinstance(text, str) and len(text) > MAX_TEXT:
            raise bad_request("msg_too_long", f"text is longer than {MAX_TEXT} characters")
        channel = call.params["channel"]
        number = self.ids.next("message")
        ident = f"msg_{number:06d}"
        message = {
            "id": ident,
            "ts": f"{number}.000000",
            "channel": channel,
            "text": text,
            "blocks": blocks,
            "username": body.get("username"),
            "correlation_id": call.headers.get("x-correlation-id"),
            "received_at": iso_now(),
        }
        self.data["messages"][ident] = message
        return Reply(200, {"ok": True, "channel": channel, "ts": message["ts"]})

    def channel_messages(self, call: Call) -> Reply:
        return Reply(200, self._listing(call.params["channel"]))

    def list_messages(self, call: Call) -> Reply:
        return Reply(200, self._listing(call.query.get("channel")))

    def _listing(self, channel: str | None) -> dict[str, Any]:
        messages = [m for m in self.data["messages"].values()
                    if channel is None or m["channel"] == channel]
        return {"ok": True, "messages": messages, "count": len(messages)}

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """A copy of the messages posted (to `channel`), oldest first."""
        with self.lock:
            return [dict(m) for m in self._listing(channel)["messages"]]


def create_app(config: SandboxConfig | None = None, **overrides: Any) -> Starlette:
    """The chat sandbox's Starlette app (``app.state.sandbox`` is the `ChatSandbox`)."""
    return ChatSandbox(config, **overrides).app


if __name__ == "__main__":
    run_standalone(ChatSandbox, 9105)
