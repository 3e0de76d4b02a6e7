"""The console's DAG layout: determinism, no overlaps, dependencies left of dependents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from app.layout import (
    GROUP_PREFIX,
    MAX_BANDS,
    MAX_DRAWN,
    NODE_GAP,
    Layout,
    LayoutNode,
    layout_dag,
)

Steps = list[tuple[str, list[str]]]
ROOT = Path(__file__).resolve().parents[2]


def fan_out(n: int) -> Steps:
    items = [f"item-{i}" for i in range(n)]
    return [("start", []), *[(i, ["start"]) for i in items], ("end", items)]


def chain(n: int) -> Steps:
    return [("c0", []), *[(f"c{i}", [f"c{i - 1}"]) for i in range(1, n)]]


def diamond() -> Steps:
    return [("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"])]


@st.composite
def dags(draw: st.DrawFn, max_steps: int = 60) -> Steps:
    """Random DAGs: each step depends on a few of the steps declared before it."""
    n = draw(st.integers(1, max_steps))
    steps: Steps = []
    for i in range(n):
        parents = draw(st.lists(st.integers(0, max(0, i - 1)), max_size=3)) if i else []
        steps.append((f"s{i}", sorted({f"s{p}" for p in parents})))
    # Declared in a shuffled order: the layout must not rely on declaration order.
    order = draw(st.permutations(range(n)))
    return [steps[i] for i in order]


def as_json(layout: Layout) -> str:
    return json.dumps(
        {
            "size": [layout.width, layout.height],
            "nodes": [
                [n.id, n.kind, list(n.members), n.layer, n.x, n.y, n.width, n.height]
                for n in layout.nodes
            ],
            "edges": [[e.source, e.target, e.points] for e in layout.edges],
        }
    )


def assert_well_formed(steps: Sequence[tuple[str, Sequence[str]]], layout: Layout) -> None:
    by_id = {node.id: node for node in layout.nodes}
    # Every step is drawn by exactly one node.
    members = [m for node in layout.nodes for m in node.members]
    assert sorted(members) == sorted(step_id for step_id, _ in steps)
    assert set(layout.node_of) == set(members)
    for node in layout.nodes:
        assert all(layout.node_of[m] == node.id for m in node.members)
        assert node.x >= 0 and node.y >= 0
        assert node.right <= layout.width and node.bottom <= layout.height
    # No two boxes overlap (nor touch closer than the gap within a column).
    for a, b in combinations(layout.nodes, 2):
        assert not boxes_overlap(a, b), (a, b)
    # Every dependency is drawn from a node left of its dependent's.
    for step_id, depends_on in steps:
        target = by_id[layout.node_of[step_id]]
        for dep in depends_on:
            source = by_id[layout.node_of[dep]]
            if source is target:
                continue
            assert source.right < target.x, (dep, step_id)
    # Edges run left to right, from the source's right side to the target's left side.
    for edge in layout.edges:
        source, target = by_id[edge.source], by_id[edge.target]
        assert edge.points[0] == (source.right, source.y + source.height / 2)
        assert edge.points[-1] == (target.x, target.y + target.height / 2)
        xs = [x for x, _ in edge.points]
        assert xs == sorted(xs)


def boxes_overlap(a: LayoutNode, b: LayoutNode) -> bool:
    apart_x = a.right <= b.x or b.right <= a.x
    apart_y = a.bottom + NODE_GAP - 1 <= b.y or b.bottom + NODE_GAP - 1 <= a.y
    return not (apart_x or apart_y)


def test_an_empty_graph_has_no_nodes() -> None:
    layout = layout_dag([])
    assert layout.nodes == () and layout.edges == ()


def test_a_diamond_is_three_columns_with_the_middle_pair_stacked() -> None:
    layout = layout_dag(diamond())
    assert_well_formed(diamond(), layout)
    nodes = {n.id: n for n in layout.nodes}
    assert [nodes[i].layer for i in "abcd"] == [0, 1, 1, 2]
    assert nodes["b"].x == nodes["c"].x
    assert nodes["b"].y < nodes["c"].y  # declaration order kept where it costs nothing
    # The ends sit halfway between the pair: edges as straight as they can be.
    middle = (nodes["b"].y + nodes["c"].bottom) / 2
    assert abs(nodes["a"].y + nodes["a"].height / 2 - middle) <= 1
    assert abs(nodes["d"].y + nodes["d"].height / 2 - middle) <= 1
    assert {(e.source, e.target) for e in layout.edges} == {
        ("a", "b"),
        ("a", "c"),
        ("b", "d"),
        ("c", "d"),
    }


def test_layers_are_longest_paths_and_long_edges_bend_around_columns() -> None:
    steps: Steps = [("a", []), ("b", ["a"]), ("c", ["b"]), ("d", ["a", "c"])]
    layout = layout_dag(steps)
    assert_well_formed(steps, layout)
    nodes = {n.id: n for n in layout.nodes}
    assert nodes["d"].layer == 3
    long_edge = next(e for e in layout.edges if (e.source, e.target) == ("a", "d"))
    assert len(long_edge.points) == 4  # through one point in each of the two columns between


def test_crossings_are_removed_by_reordering() -> None:
    # Declared so that the second column is upside down relative to the first.
    steps: Steps = [("a", []), ("b", []), ("c", ["b"]), ("d", ["a"]), ("e", ["c"]), ("f", ["d"])]
    layout = layout_dag(steps)
    assert_well_formed(steps, layout)
    y = {n.id: n.y for n in layout.nodes}
    assert (y["a"] < y["b"]) == (y["d"] < y["c"]) == (y["f"] < y["e"])


def test_the_same_steps_give_the_same_coordinates_in_any_process() -> None:
    steps = [*fan_out(50), ("tail", ["end"]), ("side", ["start"])]
    expected = as_json(layout_dag(steps))
    assert as_json(layout_dag(steps)) == expected
    script = (
        "import json, sys; from app.layout import layout_dag; "
        "from tests.unit.test_layout import as_json; "
        "print(as_json(layout_dag(json.load(sys.stdin))))"
    )
    for seed in ("1", "2"):
        result = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(steps),
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
        )
        assert result.stdout.strip() == expected


def test_a_wide_fan_out_is_one_group_between_its_ends() -> None:
    steps = fan_out(3000)
    layout = layout_dag(steps)
    assert_well_formed(steps, layout)
    assert [n.kind for n in layout.nodes] == ["step", "group", "step"]
    group = layout.nodes[1]
    assert group.id.startswith(GROUP_PREFIX)
    assert len(group.members) == 3000 and group.members[0] == "item-0"
    assert group.label == "item-0 … item-2999"
    assert {(e.source, e.target) for e in layout.edges} == {
        ("start", group.id),
        (group.id, "end"),
    }


def test_a_few_siblings_stay_separate_in_a_small_graph() -> None:
    steps = fan_out(8)
    layout = layout_dag(steps)
    assert_well_formed(steps, layout)
    assert all(n.kind == "step" for n in layout.nodes)


def test_a_long_chain_is_grouped_and_a_short_one_is_not() -> None:
    long, short = chain(10_000), chain(12)
    assert [len(n.members) for n in layout_dag(long).nodes] == [10_000]
    assert len(layout_dag(short).nodes) == 12
    assert_well_formed(short, layout_dag(short))


def test_a_large_graph_that_does_not_group_is_drawn_in_bands() -> None:
    # Every step depends on two distinct earlier ones: no siblings, no chains.
    steps: Steps = [("r0", []), ("r1", [])]
    steps += [(f"r{i}", [f"r{i - 1}", f"r{i - 2}"]) for i in range(2, 1000)]
    steps += [(f"x{i}", [f"r{i}", f"r{i + 1}"]) for i in range(0, 998, 2)]
    layout = layout_dag(steps)
    assert layout.banded
    assert len(layout.nodes) <= MAX_BANDS < MAX_DRAWN
    assert_well_formed(steps, layout)


def test_dependencies_on_unknown_ids_are_ignored() -> None:
    layout = layout_dag([("a", ["ghost"]), ("b", ["a", "a"])])
    assert [(e.source, e.target) for e in layout.edges] == [("a", "b")]


@settings(max_examples=150, deadline=None)
@given(dags())
def test_random_dags_are_well_formed(steps: Steps) -> None:
    assert_well_formed(steps, layout_dag(steps))


@settings(max_examples=20, deadline=None)
@given(dags(max_steps=600))
def test_random_large_dags_are_well_formed(steps: Steps) -> None:
    assert_well_formed(steps, layout_dag(steps))
