"""A small dependency graph over names; the only module that touches networkx."""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx


class DependencyGraph:
    """Nodes are names; an edge `depends_on -> node` means `node` runs after `depends_on`."""

    def __init__(self, nodes: Iterable[str] = ()) -> None:
        self._graph: nx.DiGraph = nx.DiGraph()
        self._graph.add_nodes_from(nodes)

    def add_node(self, node: str, **attrs: object) -> None:
        self._graph.add_node(node, **attrs)

    def add_dependency(self, node: str, depends_on: str, **attrs: object) -> None:
        """`node` needs `depends_on` first (edge depends_on -> node)."""
        self._graph.add_edge(depends_on, node, **attrs)

    def dependencies(self, node: str) -> frozenset[str]:
        return frozenset(self._graph.predecessors(node))

    def dependents(self, node: str) -> frozenset[str]:
        return frozenset(self._graph.successors(node))

    @property
    def nodes(self) -> list[str]:
        return list(self._graph.nodes)

    def edges(self) -> list[tuple[str, str, dict[str, object]]]:
        """(depends_on, node, attrs) for every edge."""
        return [(a, b, dict(d)) for a, b, d in self._graph.edges(data=True)]

    def find_cycle(self) -> list[str] | None:
        """One cycle as `[a, b, a]` (first node repeated), or None."""
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

    def levels(self) -> list[list[str]]:
        """Groups of nodes that can run together, in order."""
        return [sorted(gen) for gen in nx.topological_generations(self._graph)]
