"""Operation adapters at call time: a call's body in the System's own request shape, and its
answer back in the flows' shape (the operation's `request` and `response` Mappings)."""

from __future__ import annotations

from typing import Any

from engine.compiler.compiled import CallAction
from engine.runtime.calls import OutboundRequest


def adapted_body(action: CallAction, body: Any) -> Any:
    """The call's body as the System's own API takes it (its operation's `request` Mapping)."""
    adapter = action.system.adapters.get(action.operation)
    return adapter.outbound(body) if adapter is not None else body


def adapted_answer(request: OutboundRequest, status: int, body: Any) -> Any:
    """A System's answer in the flows' shape (its operation's `response` Mapping, 2xx only)."""
    adapter = request.system.adapters.get(request.operation)
    return adapter.inbound(status, body) if adapter is not None else body
