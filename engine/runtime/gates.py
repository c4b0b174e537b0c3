"""What holds runs and calls back while an integration is operated through an incident: paused
flows, paused Systems and circuit breakers (the switches are kept in the store: see
engine/store/controls.py).

`Gates` keeps this process's copy of the switches, read from the store every `refresh` seconds
and at once after a change made here, so the checks on the hot path are dict lookups:

- `flow_paused(name)`: a worker that claimed a run of a paused flow puts it back (`waiting`,
  reason FLOW_PAUSED) without executing a step; resuming the flow makes those runs due at once,
  and they are claimed in arrival order.
- `admit(system)` before every call: raises `CallHeld` for a paused System (SYSTEM_PAUSED, the
  run looks again after BACKSTOP unless a resume wakes it first) or an open circuit
  (CIRCUIT_OPEN, until the circuit's probe time). Held calls spend no attempt of the retry
  policy, so a run never dead-letters because of a pause or an open circuit.
- `record(system, error, probe)` after every call: feeds the System's breaker. A breaker opens
  when, over its `window`, at least `minCalls` calls were made and the failing share (timeouts,
  network errors, 5xx) reached `failureRate`. After `openFor` one call is let through as the
  probe (one among all replicas: the store decides); its success closes the circuit, its failure
  opens it for another `openFor`.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any, Protocol

from engine.compiler.compiled import CompiledSystem
from engine.compiler.records import CircuitBreaker
from engine.errors import CallError, CallHeld, StateConflict, StoreError
from engine.runtime.quota import Quotas
from engine.store.base import Reason
from engine.store.controls import (
    CIRCUIT_OPEN,
    SYSTEM_PAUSED,
    Circuit,
    Controls,
    Kind,
    Switch,
)

log = logging.getLogger("syncline.runtime")
BACKSTOP = 60.0  # a run held for a paused System looks again this late if no resume wakes it
HALF_OPEN_RECHECK = 1.0  # a call held while the probe is out looks again this soon
STATE_VALUES = {"closed": 0, "open": 1, "half-open": 2}  # syncline_circuit_state


class GateObserver(Protocol):
    """Told when a circuit opens here (metrics, alerts)."""

    def circuit_opened(self, system: str, failure_rate: float, calls: int) -> None: ...


class Breaker:
    """One System's outcomes over the last `window` seconds, in this process."""

    def __init__(self, spec: CircuitBreaker) -> None:
        self.spec = spec
        self._calls: collections.deque[tuple[float, bool]] = collections.deque()
        self._failures = 0

    def record(self, now: float, failed: bool) -> bool:
        """Count one call; True when the failure rate says the circuit should open."""
        self._calls.append((now, failed))
        self._failures += failed
        horizon = now - self.spec.window
        while self._calls and self._calls[0][0] < horizon:
            self._failures -= self._calls.popleft()[1]
        calls = len(self._calls)
        return calls >= self.spec.min_calls and self._failures >= self.spec.failure_rate * calls

    def rate(self) -> tuple[float, int]:
        """(failing share, calls) in the window."""
        calls = len(self._calls)
        return (self._failures / calls if calls else 0.0), calls

    def reset(self) -> None:
        self._calls.clear()
        self._failures = 0


def failed(error: CallError | None) -> bool:
    """Whether an outcome counts against the System: no answer, or a 5xx. A 4xx is the
    request's fault and a 429 a rate limit the retry policy honours; neither says it is down."""
    if error is None:
        return False
    return error.kind != "status" or (error.status or 0) >= 500


class Gates:
    """This process's view of the switches and its circuit breakers (see the module docstring).

    `controls` is the store's; `clock` gives unix seconds; `observer` hears of circuits that
    open here."""

    def __init__(
        self,
        controls: Controls,
        clock: Callable[[], float],
        *,
        observer: GateObserver | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self.controls = controls
        self.clock = clock
        self.observer = observer
        self.quotas = quotas
        self.flows: dict[str, Switch] = {}
        self.systems: dict[str, Switch] = {}
        self.circuits: dict[str, Circuit] = {}
        self._breakers: dict[str, Breaker] = {}

    async def refresh(self) -> None:
        """Read the switches and circuits from the store."""
        switches, circuits = await self.controls.snapshot()
        self.flows = {s.name: s for s in switches if s.kind == "flow"}
        self.systems = {s.name: s for s in switches if s.kind == "system"}
        self.circuits = {c.system: c for c in circuits}

    # switches --------------------------------------------------------------------------------
    async def pause(self, kind: Kind, name: str, reason: str, actor: str) -> Switch:
        """Pause a flow or System for every replica (audited); StateConflict if it already is
        (then nothing changed). The name is the caller's to check."""
        switch = Switch(kind, name, reason, actor, self.clock())
        existing = await self.controls.pause(switch)
        if existing is not None:
            raise StateConflict(
                f"{kind} '{name}' is already paused (by {existing.actor}: {existing.reason})"
            )
        detail = {kind: name, "reason": reason}
        await self.controls.store.audit(actor, f"pause-{kind}", None, detail)
        await self.refresh()
        log.warning("%s '%s' paused by %s: %s", kind, name, actor, reason,
                    extra={"event": f"{kind}.paused", kind: name})  # fmt: skip
        return switch

    async def resume(self, kind: Kind, name: str, reason: str, actor: str) -> Switch:
        """Lift a pause (audited): the runs it held are due at once. StateConflict if `name`
        is not paused (then nothing changed). Answers the pause that was lifted."""
        lifted = await self.controls.resume(kind, name, self.clock())
        if lifted is None:
            raise StateConflict(f"{kind} '{name}' is not paused")
        detail = {kind: name, "reason": reason, "paused": lifted.as_dict()}
        await self.controls.store.audit(actor, f"resume-{kind}", None, detail)
        await self.refresh()
        log.warning("%s '%s' resumed by %s: %s", kind, name, actor, reason,
                    extra={"event": f"{kind}.resumed", kind: name})  # fmt: skip
        return lifted

    def flow_paused(self, name: str) -> Switch | None:
        return self.flows.get(name) if self.flows else None

    def circuit_state(self, system: str) -> str:
        """closed | open | half-open, as this process last saw it."""
        circuit = self.circuits.get(system)
        return "closed" if circuit is None else circuit.state

    # calls -------------------------------------------------------------------------------------
    async def admit(self, system: CompiledSystem) -> bool:
        """May a call to `system` go now? Raises CallHeld if not (paused, circuit open, a
        budget used up: engine/runtime/quota.py); True if it is the probe of an open circuit
        (report its outcome with `record(..., probe=True)`)."""
        probe = await self._switches(system)
        if self.quotas is not None and system.rate_limit is not None:
            await self.quotas.take(system)
        return probe

    async def wake_if_resumed(self, run_id: str, reason: Reason) -> float | None:
        """A run just held (`reason`) for a paused System: if the pause was lifted while it was
        being held, the resume's wake missed it (it was still running), so make it due now
        (the time; None: still held, or the store failed and it looks again at BACKSTOP)."""
        if reason.code != SYSTEM_PAUSED:
            return None
        try:
            await self.refresh()
            if any(reason.message.startswith(_held_message(name)) for name in self.systems):
                return None
            now = self.clock()
            await self.controls.wake(run_id, now)
        except StoreError:
            return None
        return now

    async def _switches(self, system: CompiledSystem) -> bool:
        if self.systems:
            paused = self.systems.get(system.name)
            if paused is not None:
                message = f"{_held_message(system.name)}{paused.reason}"
                raise CallHeld(SYSTEM_PAUSED, message, self.clock() + BACKSTOP)
        if not self.circuits:
            return False
        circuit = self.circuits.get(system.name)
        if circuit is None:
            return False
        now = self.clock()
        if circuit.until > now:
            until = circuit.until if circuit.state == "open" else now + HALF_OPEN_RECHECK
            raise CallHeld(CIRCUIT_OPEN, f"the circuit of system '{system.name}' is open", until)
        lease = now + system.timeout + 1.0
        if await self.controls.claim_probe(system.name, lease, now):
            self.circuits[system.name] = Circuit(system.name, "half-open", lease, circuit.opened_at)
            return True
        await self.refresh()  # another replica probes, or its probe closed the circuit already
        if system.name not in self.circuits:
            return False
        message = f"the circuit of system '{system.name}' is open (a probe is out)"
        raise CallHeld(CIRCUIT_OPEN, message, now + HALF_OPEN_RECHECK)

    async def record(self, system: CompiledSystem, error: CallError | None, probe: bool) -> None:
        """A call's outcome (None: a 2xx or other answer the System gave)."""
        spec = system.circuit_breaker
        if spec is None:
            return
        now, bad = self.clock(), failed(error)
        breaker = self._breakers.get(system.name)
        if breaker is None:
            breaker = self._breakers[system.name] = Breaker(spec)
        if probe:
            try:
                await self.controls.probe_done(system.name, not bad, now + spec.open_for, now)
            except StoreError:
                log.exception("recording the probe of system '%s' failed", system.name)
            breaker.reset()
            if bad:
                self.circuits[system.name] = Circuit(
                    system.name, "open", now + spec.open_for, now
                )
            else:
                self.circuits.pop(system.name, None)
            return
        if breaker.record(now, bad) and system.name not in self.circuits:
            await self._open(system, spec, breaker, now)

    async def _open(
        self, system: CompiledSystem, spec: CircuitBreaker, breaker: Breaker, now: float
    ) -> None:
        rate, calls = breaker.rate()
        breaker.reset()
        until = now + spec.open_for
        self.circuits[system.name] = Circuit(system.name, "open", until, now)
        try:
            opened = await self.controls.open_circuit(system.name, until, now)
        except StoreError:
            log.exception("opening the circuit of system '%s' failed", system.name)
            return
        if opened:
            log.warning(
                "circuit of system '%s' opened: %.0f%% of %d calls failed; no calls for %gs",
                system.name, rate * 100, calls, spec.open_for,
                extra={"event": "circuit.opened", "system": system.name},
            )  # fmt: skip
            if self.observer is not None:
                self.observer.circuit_opened(system.name, rate, calls)

    def describe(self) -> dict[str, Any]:
        """The switches and circuits as /api/v1/status shows them."""
        return {
            "paused": {
                "flows": {name: s.as_dict() for name, s in sorted(self.flows.items())},
                "systems": {name: s.as_dict() for name, s in sorted(self.systems.items())},
            },
            "circuits": {
                name: {"state": c.state, "until": c.until, "opened_at": c.opened_at}
                for name, c in sorted(self.circuits.items())
            },
        }


def _held_message(system: str) -> str:
    return f"system '{system}' is paused: "
