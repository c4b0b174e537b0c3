"""A Flow's step graph: explicit `needs` and the `steps.<id>` its expressions read become
dependencies; unknown steps and cycles are reported where they are written."""

from __future__ import annotations

import functools
from collections.abc import Callable

from engine.compiler.compiled import CompiledStep
from engine.compiler.flow_scope import FlowScope, Loc
from engine.compiler.graph import DependencyGraph
from engine.compiler.refs import path_offset
from engine.model import flow as m
from engine.model.base import suggest
from engine.source import Diagnostic, SourceLocation


class FlowGraph(FlowScope):
    """The graph half of `FlowCompiler`."""

    def graph(self, raw: list[m.Step], steps: dict[str, CompiledStep]) -> DependencyGraph | None:
        ids = set(steps)
        graph = DependencyGraph(s.id for s in raw if s.id in ids)
        written: dict[tuple[str, str], Callable[[], SourceLocation]] = {}  # -> where it is said
        for index, step in enumerate(raw):
            for j, need in enumerate(step.needs):
                if need not in ids:
                    self.error(("steps", index, "needs", j), "E_REF", f"step '{step.id}' needs "
                               f"unknown step '{need}'{suggest(need, sorted(ids))}")
                else:
                    graph.add_dependency(step.id, need)
                    at = ("steps", index, "needs", j)
                    written.setdefault((step.id, need), functools.partial(self.where, at))
            for ref in self._check_refs(step.id, ids, ("steps", index)):
                graph.add_dependency(step.id, ref)
                written.setdefault((step.id, ref),
                                   functools.partial(self._ref_location, step.id, ref))
            self._check_refs(f"{step.id}#compensate", ids, ("steps", index, "compensate"))
        cycle = graph.find_cycle()
        if cycle:
            self._report_cycle(cycle, written, {s.id: i for i, s in enumerate(raw)})
        return None if self.failed else graph

    def _report_cycle(self, cycle: list[str],
                      written: dict[tuple[str, str], Callable[[], SourceLocation]],
                      rank: dict[str, int]) -> None:
        """At the dependency that closes the cycle (see `_closing`)."""
        chain = _closing(cycle, rank)
        closing, needed = chain[0], chain[1 % len(chain)]
        self.failed = True
        self.report(Diagnostic(
            written[(closing, needed)](), "E_CYCLE",
            f"steps form a cycle: {' -> '.join([*chain, closing])} (each needs the next; step "
            f"'{closing}' needing '{needed}' closes it)",
        ))

    def _ref_location(self, step: str, ref: str) -> SourceLocation:
        """Where a step's expression reads `steps.<ref>`: at `ref` inside the expression."""
        loc, text = self._ref_locs[step][ref]
        return self.doc.locate_in(("spec", *loc), path_offset(text, ("steps", ref)))

    def _check_refs(self, step: str, ids: set[str], loc: Loc) -> list[str]:
        good = []
        for ref in sorted(self._refs.get(step, ())):
            if ref in ids:
                good.append(ref)
                continue
            where = self._ref_locs.get(step, {}).get(ref, (loc, ""))[0]
            name = "output" if step == "__output__" else f"step '{step.split('#')[0]}'"
            self.error(where, "E_REF", f"{name} refers to unknown step "
                       f"'{ref}'{suggest(ref, sorted(ids))}")
        return good


def _closing(cycle: list[str], rank: dict[str, int]) -> list[str]:
    """A cycle `[a, b, a]` of the graph (each runs after the one before) as the steps each
    needing the next, starting at the last declared one: its need of the next closes it."""
    needs = list(reversed(cycle[:-1]))
    start = max(range(len(needs)), key=lambda i: rank.get(needs[i], 0))
    return needs[start:] + needs[:start]
