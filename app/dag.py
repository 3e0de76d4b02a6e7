"""Pure functions over a workflow's dependency graph.

A graph is given as ``deps``: a mapping from each step id to the ids it depends on,
in declaration order (the order of the workflow's ``steps``). Edges point from a
step to its dependencies, so ``{"b": ["a"]}`` means "b runs after a".

Every function is iterative and O(V + E): a workflow may declare 10,000 steps in a
single chain, far past Python's recursion limit. Results are deterministic: where
several answers are possible, the one that follows declaration order is returned.

Ids named only as a dependency (never as a key) are treated as steps without
dependencies of their own, declared after all the keys in order of first mention.
Validated workflows have none; the rule only keeps these functions total.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = [
    "CycleError",
    "ancestors",
    "dependents_of",
    "descendants",
    "describe_cycle",
    "find_cycle",
    "topological_order",
]


class CycleError(ValueError):
    """The graph has a cycle, so it has no topological order."""

    def __init__(self, cycle: list[str]) -> None:
        super().__init__(describe_cycle(cycle))
        #: The cycle as a path whose first node is repeated at the end.
        self.cycle = cycle


#: A cycle longer than this is named by its ends and a count of the steps between.
CYCLE_SHOWN = 10


def describe_cycle(cycle: Sequence[str]) -> str:
    """``cycle: a -> b -> a``; a long cycle keeps its first and last steps and a count.

    ``cycle`` is a path whose first node is repeated at the end (``find_cycle``).
    A cycle through 10,000 steps stays a one-line message.
    """
    if len(cycle) <= CYCLE_SHOWN + 2:
        return "cycle: " + " -> ".join(cycle)
    half = CYCLE_SHOWN // 2
    hidden = len(cycle) - 2 * half
    return f"cycle of {len(cycle) - 1:,} steps: " + " -> ".join(
        [*cycle[:half], f"… {hidden:,} more …", *cycle[-half:]]
    )


def _nodes(graph: Mapping[str, Sequence[str]]) -> list[str]:
    """Every node of ``graph``: its keys, then ids only named as neighbours."""
    nodes = list(graph)
    seen = set(nodes)
    for neighbours in graph.values():
        for node in neighbours:
            if node not in seen:
                seen.add(node)
                nodes.append(node)
    return nodes


def _walk(graph: Mapping[str, Sequence[str]]) -> tuple[list[str], list[str] | None]:
    """Depth-first search over ``graph`` in declaration order.

    Returns the post-order (each node after everything it points to) and the first
    cycle met, if any. One traversal serves both ``find_cycle`` and
    ``topological_order`` so they can never disagree about whether a cycle exists.
    """
    # Node states: absent = unvisited, False = on the current path, True = finished.
    state: dict[str, bool] = {}
    order: list[str] = []
    empty: Sequence[str] = ()
    for root in _nodes(graph):
        if root in state:
            continue
        state[root] = False
        path = [root]
        # Position of each node on ``path``, to cut a cycle out of it in O(1).
        on_path = {root: 0}
        # One iterator per node on the path: where its neighbour scan resumes.
        iterators = [iter(graph.get(root, empty))]
        while iterators:
            for neighbour in iterators[-1]:
                seen = state.get(neighbour)
                if seen is None:
                    state[neighbour] = False
                    on_path[neighbour] = len(path)
                    path.append(neighbour)
                    iterators.append(iter(graph.get(neighbour, empty)))
                    break
                if seen is False:
                    return order, [*path[on_path[neighbour] :], neighbour]
            else:
                iterators.pop()
                node = path.pop()
                del on_path[node]
                state[node] = True
                order.append(node)
    return order, None


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """Return a dependency cycle as a path such as ``["a", "b", "a"]``, or None.

    The path follows "depends on" edges (a depends on b, which depends on a) and
    repeats its first node at the end; a step depending on itself gives
    ``["a", "a"]``. When there are several cycles, the one met first by a
    depth-first search in declaration order is returned.
    """
    return _walk(deps)[1]


def topological_order(deps: Mapping[str, Sequence[str]]) -> list[str]:
    """Return every node, each after all of its dependencies.

    The order is the depth-first post-order in declaration order, so a
    declaration that is already a valid order comes back unchanged. Raises
    ``CycleError`` (a ``ValueError``) when there is no such order.
    """
    order, cycle = _walk(deps)
    if cycle is not None:
        raise CycleError(cycle)
    return order


def dependents_of(deps: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Reverse the edges: map every node to the nodes that depend on it.

    Every node is a key (with an empty list when nothing depends on it), keys and
    each list are in declaration order, and a dependency listed twice by the same
    step is counted once.
    """
    dependents: dict[str, list[str]] = {node: [] for node in _nodes(deps)}
    for node, node_deps in deps.items():
        for dep in node_deps:
            listed = dependents[dep]
            # A node's dependencies are scanned together, so a repeat is always last.
            if not listed or listed[-1] != node:
                listed.append(node)
    return dependents


def positions(graph: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each node's place in declaration order (for ``ancestors`` on a large graph)."""
    return {node: index for index, node in enumerate(_nodes(graph))}


def _reachable(
    start: str, graph: Mapping[str, Sequence[str]], order: Mapping[str, int] | None = None
) -> list[str]:
    """Nodes reachable from ``start`` (excluding ``start``) in declaration order."""
    seen = {start}
    stack = [start]
    empty: Sequence[str] = ()
    while stack:
        for neighbour in graph.get(stack.pop(), empty):
            if neighbour not in seen:
                seen.add(neighbour)
                stack.append(neighbour)
    seen.discard(start)
    if order is not None:
        # A few nodes of a large graph: sort them rather than scan the graph.
        return sorted(seen, key=order.__getitem__)
    return _in_order(seen, graph)


def _in_order(found: set[str], graph: Mapping[str, Sequence[str]]) -> list[str]:
    """``found`` sorted by declaration order, without sorting (keeps it O(V + E))."""
    if not found:
        return []
    ordered = [node for node in graph if node in found]
    if len(ordered) < len(found):
        # Some were only named as neighbours: append them in order of first mention.
        ordered = [node for node in _nodes(graph) if node in found]
    return ordered


def ancestors(
    node: str, deps: Mapping[str, Sequence[str]], order: Mapping[str, int] | None = None
) -> list[str]:
    """Return every transitive dependency of ``node``, in declaration order.

    ``node`` itself is never included, even when it lies on a cycle. ``order`` is
    ``positions(deps)``, for callers that ask about many nodes of one graph: the
    answer then costs what the ancestors do, not what the whole graph does.
    """
    return _reachable(node, deps, order)


def descendants(node: str, dependents: Mapping[str, Sequence[str]]) -> list[str]:
    """Return every step that transitively depends on ``node``, in declaration order.

    ``dependents`` is the reverse graph from ``dependents_of``, whose keys are in
    declaration order. ``node`` itself is never included.
    """
    return _reachable(node, dependents)
