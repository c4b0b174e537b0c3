"""A small dependency graph over names; the only module that touches networkx.

The compiler uses it while it compiles (step order, cycles of steps and of flows); no graph is
kept in a Plan: a compiled step lists the steps it needs.
"""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx


class DependencyGraph:
    """Nodes are names; an edge `depends_on -> node` means `node` runs after `depends_on`."""

    def __init__(self, nodes: Iterable[str] = ()) -> None:
        self._graph: nx.DiGraph = nx.DiGraph()
        self._graph.add_nodes_from(nodes)

    def add_node(self, node: str) -> None:
        self._graph.add_node(node)

    def add_dependency(self, node: str, depends_on: str) -> None:
        """`node` needs `depends_on` first (edge depends_on -> node)."""
        self._graph.add_edge(depends_on, node)

    def dependencies(self, node: str) -> frozenset[str]:
        return frozenset(self._graph.predecessors(node))

    def find_cycle(self) -> list[str] | None:
        """One cycle as `[a, b, a]` (first node repeated; each runs after the one before), or
        None."""
        try:
            edges = nx.find_cycle(self._graph)
        except nx.NetworkXNoCycle:
            return None
        return [edges[0][0], *(b for _, b in edges)]

    def cycles(self) -> list[list[str]]:
        """Every elementary cycle (for reporting sync loops), each as [a, b, a]."""
        return [[*c, c[0]] for c in nx.simple_cycles(self._graph)]

    def order(self, key: dict[str, int] | None = None) -> list[str]:
        """A topological order; ties broken by `key` (declaration order), so it is stable."""
        rank = key or {}
        return list(nx.lexicographical_topological_sort(self._graph, key=lambda n: rank.get(n, 0)))
