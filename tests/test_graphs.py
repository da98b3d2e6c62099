"""graphrnn/graphs.py gives networkx's answers: each function against networkx's on random
graphs, and every zoo cell's Program built with it equals the one built with networkx."""

from __future__ import annotations

import random

import pytest

from graphrnn import fuse, graphs, pipeline, program_json, schedule
from graphrnn.cells import ZOO, zoo_cell

nx = pytest.importorskip("networkx")


def _random_pair(seed: int, n: int = 12, p: float = 0.2, dag: bool = False,
                 caps: bool = False) -> tuple[graphs.DiGraph, object]:
    rng = random.Random(seed)
    ours, theirs = graphs.DiGraph(), nx.DiGraph()
    nodes = list(range(n))
    rng.shuffle(nodes)          # insertion order differs from the node values
    for v in nodes:
        ours.add_node(v)
        theirs.add_node(v)
    for u in range(n):
        for v in range(n):
            if u != v and (not dag or u < v) and rng.random() < p:
                attr = {}
                if caps and rng.random() < 0.85:
                    attr["capacity"] = rng.choice([0, 1, 2, 3, 5, 8])
                ours.add_edge(u, v, **attr)
                theirs.add_edge(u, v, **attr)
    return ours, theirs


@pytest.mark.parametrize("seed", range(40))
def test_reachability_and_order_agree_with_networkx(seed: int) -> None:
    ours, theirs = _random_pair(seed, dag=seed % 2 == 0)
    assert ours.nodes == list(theirs.nodes) and ours.edges == list(theirs.edges)
    for u in ours.nodes:
        assert list(ours.successors(u)) == list(theirs.successors(u))
        assert list(ours.predecessors(u)) == list(theirs.predecessors(u))
        assert graphs.descendants(ours, u) == nx.descendants(theirs, u)
        assert graphs.ancestors(ours, u) == nx.ancestors(theirs, u)
        for v in ours.nodes:
            assert graphs.has_path(ours, u, v) == nx.has_path(theirs, u, v)
    dag = nx.is_directed_acyclic_graph(theirs)
    assert graphs.is_directed_acyclic_graph(ours) == dag
    if dag:
        key = {n: (n * 7) % 5 for n in ours.nodes}.__getitem__   # many ties
        assert list(graphs.lexicographical_topological_sort(ours, key=key)) == \
            list(nx.lexicographical_topological_sort(theirs, key=key))
    else:
        with pytest.raises(ValueError, match="cycle"):
            list(graphs.lexicographical_topological_sort(ours))
    # edits keep networkx's order
    u = ours.nodes[seed % len(ours)]
    ours.remove_node(u)
    theirs.remove_node(u)
    ours.remove_edges_from(list(ours.edges)[::3])
    theirs.remove_edges_from(list(theirs.edges)[::3])
    c = ours.copy()
    assert c.edges == list(theirs.edges) and c.nodes == list(theirs.nodes)


@pytest.mark.parametrize("seed", range(60))
def test_minimum_cut_partition_is_networkxs(seed: int) -> None:
    ours, theirs = _random_pair(seed, n=10 + seed % 7, p=0.3, dag=seed % 3 == 0, caps=True)
    s, t = 0, 1
    try:
        want = nx.minimum_cut(theirs, s, t)
    except nx.NetworkXUnbounded:
        with pytest.raises(ValueError, match="unbounded"):
            graphs.minimum_cut(ours, s, t)
        return
    got = graphs.minimum_cut(ours, s, t)
    assert got[0] == want[0]
    assert got[1] == want[1]


def test_minimum_cut_accepts_a_networkx_graph() -> None:
    _ours, theirs = _random_pair(3, p=0.4, caps=True)
    try:
        want = nx.minimum_cut(theirs, 0, 1)
    except nx.NetworkXUnbounded:
        pytest.skip("unbounded")
    assert graphs.minimum_cut(theirs, 0, 1) == want


def test_anything_else_is_networkxs() -> None:
    assert graphs.simple_cycles is nx.simple_cycles


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_programs_equal_those_built_with_networkx(name: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cell = zoo_cell(name, 6 if name in ("mut1", "mut2", "mut3") else 3, 6, "float64")
    mine = program_json.dumps(pipeline.build_program(cell))
    monkeypatch.setattr(fuse, "nx", nx)
    monkeypatch.setattr(schedule, "nx", nx)
    assert program_json.dumps(pipeline.build_program(cell)) == mine


def test_a_cold_compile_does_not_import_networkx() -> None:
    import subprocess
    import sys
    code = ("import sys, graphrnn\n"
            "from graphrnn.cells import zoo_cell\n"
            "graphrnn.compile(zoo_cell('lstm', 3, 4), backend='program', cache=False)\n"
            "print('networkx' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
