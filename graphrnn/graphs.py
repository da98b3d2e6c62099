"""The few directed-graph algorithms the optimizer uses, with networkx's names and answers.

``import networkx`` costs 0.15-0.25 s (it imports every algorithm it has), a third of a cold
compile; the optimizer needs a dict-of-dicts digraph, reachability, a topological order and one
minimum cut. fuse.py and schedule.py import this module as ``nx``: ``DiGraph`` keeps
networkx's insertion order of nodes, successors and predecessors (so every pass visits nodes
in the same order and the Program is the same, byte for byte), and each function returns what
networkx's function of the same name returns:

* ``has_path``, ``descendants``, ``ancestors``, ``is_directed_acyclic_graph``;
* ``lexicographical_topological_sort(g, key)``: networkx's algorithm (a heap of ``(key(n),
  insertion index, n)`` over the nodes of in-degree zero), so ties break the same way;
* ``minimum_cut(g, s, t)``: ``(value, (S, T))`` where ``T`` is the set of nodes that can reach
  ``t`` in the residual graph of a maximum flow (edges without ``capacity`` are unbounded).
  That set is the same for every maximum flow (and for the maximum preflow networkx's
  preflow-push stops at), so the partition is networkx's whatever algorithm finds the flow;
  here Edmonds-Karp (shortest augmenting paths), plenty for graphs of a few thousand nodes.

``tests/test_graphs.py`` checks each against networkx on random graphs, and that every zoo
cell's Program is the same built either way. Any other name is looked up in networkx itself,
imported then (module ``__getattr__``), so code written against networkx keeps working.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

Node = Hashable


class DiGraph:
    """A directed graph as ordered dicts: ``succ[u][v]`` and ``pred[v][u]`` are the edge's
    attribute dict (shared), nodes in insertion order."""

    def __init__(self) -> None:
        self._succ: dict[Node, dict[Node, dict[str, Any]]] = {}
        self._pred: dict[Node, dict[Node, dict[str, Any]]] = {}

    # -- building --
    def add_node(self, n: Node) -> None:
        if n not in self._succ:
            self._succ[n] = {}
            self._pred[n] = {}

    def add_nodes_from(self, nodes: Iterable[Node]) -> None:
        for n in nodes:
            self.add_node(n)

    def add_edge(self, u: Node, v: Node, **attr: Any) -> None:
        self.add_node(u)
        self.add_node(v)
        d = self._succ[u].get(v, {})
        d.update(attr)
        self._succ[u][v] = d
        self._pred[v][u] = d

    def add_edges_from(self, edges: Iterable[tuple[Node, Node]]) -> None:
        for u, v in edges:
            self.add_edge(u, v)

    def remove_edge(self, u: Node, v: Node) -> None:
        try:
            del self._succ[u][v]
            del self._pred[v][u]
        except KeyError:
            raise KeyError(f"the edge {u}-{v} is not in the graph") from None

    def remove_edges_from(self, edges: Iterable[tuple[Node, Node]]) -> None:
        for u, v in edges:   # as networkx: edges not in the graph are ignored
            if u in self._succ and v in self._succ[u]:
                del self._succ[u][v]
                del self._pred[v][u]

    def remove_node(self, n: Node) -> None:
        try:
            succ = self._succ.pop(n)
        except KeyError:
            raise KeyError(f"the node {n} is not in the graph") from None
        for v in succ:
            del self._pred[v][n]
        for u in self._pred.pop(n):
            del self._succ[u][n]

    def copy(self) -> DiGraph:
        g = DiGraph()
        g.add_nodes_from(self._succ)
        for u, nbrs in self._succ.items():
            for v, d in nbrs.items():
                g.add_edge(u, v, **d)
        return g

    # -- reading --
    @property
    def nodes(self) -> list[Node]:
        return list(self._succ)

    @property
    def edges(self) -> list[tuple[Node, Node]]:
        return [(u, v) for u, nbrs in self._succ.items() for v in nbrs]

    def __contains__(self, n: object) -> bool:
        return n in self._succ

    def __iter__(self) -> Iterator[Node]:
        return iter(self._succ)

    def __len__(self) -> int:
        return len(self._succ)

    def has_node(self, n: Node) -> bool:
        return n in self._succ

    def has_edge(self, u: Node, v: Node) -> bool:
        return u in self._succ and v in self._succ[u]

    def successors(self, n: Node) -> Iterator[Node]:
        return iter(self._succ[n])

    def predecessors(self, n: Node) -> Iterator[Node]:
        return iter(self._pred[n])

    def in_degree(self, n: Node) -> int:
        return len(self._pred[n])

    def out_degree(self, n: Node) -> int:
        return len(self._succ[n])

    def edge_data(self, u: Node, v: Node) -> dict[str, Any]:
        return self._succ[u][v]


def _reach(g: Any, start: Node, step: Callable[[Node], Iterable[Node]]) -> set[Node]:
    seen = {start}
    todo = [start]
    while todo:
        for m in step(todo.pop()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    seen.discard(start)
    return seen


def descendants(g: Any, n: Node) -> set[Node]:
    """Nodes reachable from ``n`` (not ``n`` itself)."""
    if n not in g:
        raise KeyError(f"the node {n} is not in the graph")
    return _reach(g, n, g.successors)


def ancestors(g: Any, n: Node) -> set[Node]:
    """Nodes from which ``n`` is reachable (not ``n`` itself)."""
    if n not in g:
        raise KeyError(f"the node {n} is not in the graph")
    return _reach(g, n, g.predecessors)


def has_path(g: Any, source: Node, target: Node) -> bool:
    """Whether a path leads from ``source`` to ``target`` (a node reaches itself)."""
    for n in (source, target):
        if n not in g:
            raise KeyError(f"the node {n} is not in the graph")
    if source == target:
        return True
    seen = {source}
    todo = [source]
    while todo:
        for m in g.successors(todo.pop()):
            if m == target:
                return True
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return False


def _kahn_order(g: Any) -> list[Node] | None:
    indeg = {n: 0 for n in g}
    for n in g:
        for m in g.successors(n):
            indeg[m] += 1
    ready = [n for n, d in indeg.items() if d == 0]
    out = []
    while ready:
        n = ready.pop()
        out.append(n)
        for m in g.successors(n):
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    return out if len(out) == len(indeg) else None


def is_directed_acyclic_graph(g: Any) -> bool:
    return _kahn_order(g) is not None


def lexicographical_topological_sort(g: Any, key: Callable[[Node], Any] | None = None
                                     ) -> Iterator[Node]:
    """networkx's order: the smallest ``(key(n), insertion index)`` among the ready nodes
    first. Raises ``ValueError`` on a cycle (networkx: ``NetworkXUnfeasible``)."""
    if key is None:
        def key(n: Node) -> Any:
            return n
    index = {n: i for i, n in enumerate(g)}
    indeg = {n: 0 for n in g}
    for n in g:
        for m in g.successors(n):
            indeg[m] += 1
    heap = [(key(n), index[n], n) for n in g if indeg[n] == 0]
    heapq.heapify(heap)
    done = 0
    while heap:
        _k, _i, n = heapq.heappop(heap)
        for m in g.successors(n):
            indeg[m] -= 1
            if indeg[m] == 0:
                heapq.heappush(heap, (key(m), index[m], m))
        done += 1
        yield n
    if done != len(indeg):
        raise ValueError("the graph contains a cycle: no topological order")


def minimum_cut(g: Any, s: Node, t: Node, capacity: str = "capacity"
                ) -> tuple[float, tuple[set[Node], set[Node]]]:
    """``(cut value, (source side, sink side))``; see the module docstring. An edge without
    ``capacity`` is unbounded; ``ValueError`` when every s-t cut is (networkx:
    ``NetworkXUnbounded``)."""
    if s not in g or t not in g:
        raise KeyError(f"the node {s if s not in g else t} is not in the graph")
    if s == t:
        raise ValueError("source and sink are the same node")
    # residual capacities r[u][v] over both directions of every edge (antiparallel edges add)
    finite = 0
    r: dict[Node, dict[Node, float]] = {n: {} for n in g}
    unbounded: list[tuple[Node, Node]] = []
    for u in g:
        for v in g.successors(u):
            c = g.edge_data(u, v).get(capacity) if isinstance(g, DiGraph) \
                else g.edges[u, v].get(capacity)
            if c is None:
                unbounded.append((u, v))
                c = 0
            else:
                if c < 0:
                    raise ValueError(f"edge {u}-{v} has a negative capacity {c}")
                finite += c
            r[u][v] = r[u].get(v, 0) + c
            r[v].setdefault(u, 0)
    inf = 3 * finite + 1   # larger than any cut of finite edges (networkx uses 3x the sum too)
    for u, v in unbounded:
        r[u][v] += inf
    value: float = 0
    while True:   # Edmonds-Karp: breadth-first augmenting paths
        parent: dict[Node, Node] = {s: s}
        queue = deque([s])
        while queue and t not in parent:
            u = queue.popleft()
            for v, cap in r[u].items():
                if cap > 0 and v not in parent:
                    parent[v] = u
                    queue.append(v)
        if t not in parent:
            break
        push = min(r[parent[v]][v] for v in _path(parent, t))
        for v in _path(parent, t):
            u = parent[v]
            r[u][v] -= push
            r[v][u] += push
        value += push
        if value >= inf:
            raise ValueError("every s-t cut has an edge without capacity: the cut is unbounded")
    # the sink side: nodes with a residual path to t
    sink_side = {t}
    todo = [t]
    while todo:
        v = todo.pop()
        for u in r[v]:   # r[u][v] > 0 means u -> v in the residual graph
            if u not in sink_side and r[u][v] > 0:
                sink_side.add(u)
                todo.append(u)
    return value, (set(g) - sink_side, sink_side)


def _path(parent: dict[Node, Node], t: Node) -> Iterator[Node]:
    v = t
    while parent[v] != v:
        yield v
        v = parent[v]


def __getattr__(name: str) -> Any:
    """Anything else: networkx's own (imported on first use). Not dunder names: the import
    system asks for ``__path__`` and such, and must not load networkx to hear no."""
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import networkx
    return getattr(networkx, name)
