"""Tests for app.dag: examples, invariants on random graphs, and very long chains."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.dag import (
    CycleError,
    ancestors,
    dependents_of,
    descendants,
    find_cycle,
    positions,
    topological_order,
)

Deps = dict[str, list[str]]

CHAIN_LENGTH = 10_000


def chain(length: int) -> Deps:
    """s0 <- s1 <- ... : each step depends on the one declared before it."""
    return {f"s{i}": [f"s{i - 1}"] if i else [] for i in range(length)}


# ------------------------------------------------------------------ brute force


def reachable(start: str, graph: Deps) -> set[str]:
    """Everything reachable from ``start`` in one or more steps."""
    found: set[str] = set()
    frontier = list(graph.get(start, []))
    while frontier:
        node = frontier.pop()
        if node not in found:
            found.add(node)
            frontier.extend(graph.get(node, []))
    return found


def has_cycle(graph: Deps) -> bool:
    return any(node in reachable(node, graph) for node in graph)


def assert_is_cycle(path: list[str], graph: Deps) -> None:
    assert len(path) >= 2
    assert path[0] == path[-1]
    assert len(set(path[:-1])) == len(path) - 1, "a simple cycle visits each node once"
    for node, dep in pairwise(path):
        assert dep in graph[node], f"{node} -> {dep} is not an edge"


# ---------------------------------------------------------------- strategies


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = 25) -> Deps:
    """A random DAG, declared in a random order (not necessarily a topological one)."""
    count = draw(st.integers(0, max_nodes))
    names = [f"n{i}" for i in range(count)]
    # Edges only go to lower numbers, which makes the graph acyclic.
    edges = {
        name: draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else []
        for i, name in enumerate(names)
    }
    order = draw(st.permutations(names))
    return {name: edges[name] for name in order}


@st.composite
def digraphs(draw: st.DrawFn, max_nodes: int = 12) -> Deps:
    """A random directed graph: cycles and self-loops allowed."""
    count = draw(st.integers(1, max_nodes))
    names = [f"n{i}" for i in range(count)]
    return {name: draw(st.lists(st.sampled_from(names), unique=True, max_size=4)) for name in names}


# ---------------------------------------------------------------------- examples


def test_find_cycle_two_nodes() -> None:
    assert find_cycle({"a": ["b"], "b": ["a"]}) == ["a", "b", "a"]


def test_find_cycle_self_loop() -> None:
    assert find_cycle({"a": [], "b": ["b"]}) == ["b", "b"]


def test_find_cycle_none() -> None:
    assert find_cycle({"a": [], "b": ["a"], "c": ["a", "b"]}) is None
    assert find_cycle({}) is None


def test_find_cycle_path_starts_where_the_cycle_does() -> None:
    # a leads into the b <-> c cycle but is not part of it.
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["b"]}) == ["b", "c", "b"]


def test_find_cycle_follows_declaration_order() -> None:
    deps = {"x": ["y"], "y": ["x"], "a": ["b"], "b": ["a"]}
    assert find_cycle(deps) == ["x", "y", "x"]
    assert find_cycle({"a": ["b"], "b": ["a"], "x": ["y"], "y": ["x"]}) == ["a", "b", "a"]
    # Within one node, dependencies are followed in the order they are listed.
    assert find_cycle({"a": ["c", "b"], "b": ["a"], "c": ["a"]}) == ["a", "c", "a"]


def test_find_cycle_through_long_path() -> None:
    deps = {"a": ["b"], "b": ["c"], "c": ["d"], "d": ["a"]}
    assert find_cycle(deps) == ["a", "b", "c", "d", "a"]


def test_dependents_of() -> None:
    deps = {"a": [], "b": ["a"], "c": ["a", "b"], "d": ["c"]}
    assert dependents_of(deps) == {"a": ["b", "c"], "b": ["c"], "c": ["d"], "d": []}


def test_dependents_of_lists_each_dependent_once() -> None:
    assert dependents_of({"a": [], "b": ["a", "a"]}) == {"a": ["b"], "b": []}


def test_nodes_only_named_as_dependencies_are_included() -> None:
    deps = {"b": ["zz"], "a": ["b", "yy"]}
    assert list(dependents_of(deps)) == ["b", "a", "zz", "yy"]
    assert topological_order(deps) == ["zz", "b", "yy", "a"]
    assert ancestors("a", deps) == ["b", "zz", "yy"]


def test_topological_order_keeps_a_valid_declaration_order() -> None:
    deps = {"a": [], "b": [], "c": ["a"], "d": ["c", "b"]}
    assert topological_order(deps) == ["a", "b", "c", "d"]


def test_topological_order_reorders_when_needed() -> None:
    assert topological_order({"c": ["b"], "b": ["a"], "a": []}) == ["a", "b", "c"]


def test_topological_order_refuses_a_cycle() -> None:
    with pytest.raises(CycleError, match=r"^cycle: a -> b -> a$") as caught:
        topological_order({"a": ["b"], "b": ["a"]})
    assert caught.value.cycle == ["a", "b", "a"]
    assert isinstance(caught.value, ValueError)


def test_ancestors_and_descendants_of_a_diamond() -> None:
    deps = {"top": [], "left": ["top"], "right": ["top"], "bottom": ["right", "left"]}
    dependents = dependents_of(deps)
    assert ancestors("bottom", deps) == ["top", "left", "right"]
    assert ancestors("top", deps) == []
    assert descendants("top", dependents) == ["left", "right", "bottom"]
    assert descendants("bottom", dependents) == []


def test_ancestors_exclude_the_node_itself_on_a_cycle() -> None:
    deps = {"a": ["b"], "b": ["a"]}
    assert ancestors("a", deps) == ["b"]
    assert descendants("a", dependents_of(deps)) == ["b"]


def test_unknown_node_has_no_relatives() -> None:
    assert ancestors("nope", {"a": []}) == []
    assert descendants("nope", {"a": []}) == []


# ------------------------------------------------------------------ long chains


def test_chain_of_ten_thousand_steps() -> None:
    deps = chain(CHAIN_LENGTH)
    last = f"s{CHAIN_LENGTH - 1}"
    assert find_cycle(deps) is None
    assert topological_order(deps) == list(deps)
    assert ancestors(last, deps) == list(deps)[:-1]
    dependents = dependents_of(deps)
    assert descendants("s0", dependents) == list(deps)[1:]


def test_chain_declared_backwards() -> None:
    names = [f"s{i}" for i in range(CHAIN_LENGTH)]
    deps = {name: [names[i + 1]] if i + 1 < CHAIN_LENGTH else [] for i, name in enumerate(names)}
    assert topological_order(deps) == names[::-1]


def test_cycle_closing_a_long_chain() -> None:
    deps = chain(CHAIN_LENGTH)
    deps["s0"] = [f"s{CHAIN_LENGTH - 1}"]
    cycle = find_cycle(deps)
    assert cycle is not None
    assert len(cycle) == CHAIN_LENGTH + 1
    assert_is_cycle(cycle, deps)
    with pytest.raises(CycleError):
        topological_order(deps)


def test_wide_fan_in() -> None:
    leaves: Deps = {f"s{i}": [] for i in range(CHAIN_LENGTH)}
    deps: Deps = {**leaves, "join": list(leaves)}
    assert topological_order(deps) == [*leaves, "join"]
    assert ancestors("join", deps) == list(leaves)
    assert dependents_of(deps)["s7"] == ["join"]


# -------------------------------------------------------------------- properties


@given(dags())
def test_random_dag_has_no_cycle(deps: Deps) -> None:
    assert find_cycle(deps) is None


@given(dags())
def test_topological_order_respects_every_edge(deps: Deps) -> None:
    order = topological_order(deps)
    assert sorted(order) == sorted(deps)
    position = {node: i for i, node in enumerate(order)}
    for node, node_deps in deps.items():
        for dep in node_deps:
            assert position[dep] < position[node]


@given(dags())
def test_dependents_reverse_every_edge(deps: Deps) -> None:
    dependents = dependents_of(deps)
    assert list(dependents) == list(deps)
    edges = {(node, dep) for node, node_deps in deps.items() for dep in node_deps}
    reversed_edges = {(node, dep) for dep, nodes in dependents.items() for node in nodes}
    assert edges == reversed_edges
    for nodes in dependents.values():
        assert nodes == [node for node in deps if node in nodes], "declaration order"


@given(dags())
def test_ancestors_and_descendants_are_inverse(deps: Deps) -> None:
    dependents = dependents_of(deps)
    up = {node: ancestors(node, deps) for node in deps}
    down = {node: descendants(node, dependents) for node in deps}
    for a in deps:
        for b in deps:
            assert (a in up[b]) == (b in down[a])


@given(dags())
def test_ancestors_match_brute_force_in_declaration_order(deps: Deps) -> None:
    declared = list(deps)
    for node in deps:
        expected = reachable(node, deps)
        result = ancestors(node, deps)
        assert set(result) == expected
        assert result == [n for n in declared if n in expected]


@given(digraphs())
def test_find_cycle_finds_a_cycle_iff_one_exists(deps: Deps) -> None:
    cycle = find_cycle(deps)
    assert (cycle is not None) == has_cycle(deps)
    if cycle is not None:
        assert_is_cycle(cycle, deps)
        assert find_cycle(dict(deps)) == cycle, "deterministic"


@given(digraphs())
def test_topological_order_exists_iff_no_cycle(deps: Deps) -> None:
    if has_cycle(deps):
        with pytest.raises(CycleError) as caught:
            topological_order(deps)
        assert_is_cycle(caught.value.cycle, deps)
    else:
        assert sorted(topological_order(deps)) == sorted(deps)


@given(dags())
def test_ancestors_with_positions_are_the_same_list(deps: Deps) -> None:
    """The sorted path for large graphs answers exactly what the scan does."""
    order = positions(deps)
    for node in deps:
        assert ancestors(node, deps, order) == ancestors(node, deps)
