"""Where the console draws each step of a workflow's DAG: a pure left-to-right layout.

The layout is a small Sugiyama pipeline over plain values, computed once per
workflow on the server (its graph never changes) and drawn by the console as
positioned boxes over SVG edges:

1. **Grouping**, so that a large DAG stays drawable: siblings (steps with the
   same dependencies and the same dependents, such as the 3,000 items of a
   fan-out) become one group node, and so do long chains of steps that only
   follow one another. A graph still too large after that is drawn as bands
   of consecutive layers. The console shows each group's per-status counts and
   its members on demand.
2. **Layers by longest path**: a node's layer is one more than the deepest of
   its dependencies, so every dependency sits in a column left of its
   dependents. An edge that spans several layers goes through one dummy point
   per layer it crosses.
3. **Ordering**: barycentre sweeps down and up the layers reduce edge
   crossings; the ordering with the fewest crossings is kept.
4. **Coordinates**: columns by layer; within a column each node is pulled
   towards the mean height of its neighbours, with the order and the minimum
   gaps kept (an isotonic fit), so edges run as straight as they can.

Everything is deterministic: the same steps give the same coordinates, in any
process (no set or hash order is ever relied on).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import Literal

#: Size of a step's box, and of a group's.
NODE_WIDTH = 184
NODE_HEIGHT = 44
GROUP_WIDTH = 208
GROUP_HEIGHT = 80
#: Horizontal room between two columns, vertical room between two boxes.
LAYER_GAP = 72
NODE_GAP = 14
#: Room around the drawing.
MARGIN = 24
#: Height given to the point where a long edge crosses a column.
DUMMY_HEIGHT = 4

#: Above this many steps a graph is "large": smaller sibling sets and chains are grouped.
LARGE_GRAPH = 300
#: Siblings grouped together in a small graph, and in a large one.
SIBLINGS_SMALL = 16
SIBLINGS_LARGE = 4
#: Chains of steps grouped together in a small graph, and in a large one.
CHAIN_SMALL = 40
CHAIN_LARGE = 8
#: A grouped graph with more nodes than this is drawn as bands of layers.
MAX_DRAWN = 400
#: At most this many bands when it is.
MAX_BANDS = 48
#: Long edges get dummy points only while there are at most this many in all.
MAX_DUMMIES = 4_000
#: Barycentre sweeps (each down or up); stop early after this many without progress.
SWEEPS = 16
PATIENCE = 4
#: Passes of the coordinate refinement.
REFINE_PASSES = 6

NodeKind = Literal["step", "group"]
#: Group node ids start with a character that step ids cannot contain.
GROUP_PREFIX = "~"


@dataclass(frozen=True, slots=True)
class LayoutNode:
    """A drawn box: one step, or a group of steps."""

    id: str
    kind: NodeKind
    #: The steps it stands for, in declaration order (one for a step).
    members: tuple[str, ...]
    label: str
    layer: int
    x: float
    y: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.x + self.width

    @property
    def bottom(self) -> float:
        return self.y + self.height


@dataclass(frozen=True, slots=True)
class LayoutEdge:
    """A dependency between two drawn nodes, through the points it is routed along."""

    source: str
    target: str
    points: tuple[tuple[float, float], ...]

    @property
    def path(self) -> str:
        """An SVG path: horizontal-tangent curves through every point."""
        (x0, y0), *rest = self.points
        parts = [f"M{x0:g},{y0:g}"]
        for x1, y1 in rest:
            mid = (x0 + x1) / 2
            parts.append(f"C{mid:g},{y0:g} {mid:g},{y1:g} {x1:g},{y1:g}")
            x0, y0 = x1, y1
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Layout:
    width: float
    height: float
    #: In drawing order: by column, then top to bottom (also the keyboard order).
    nodes: tuple[LayoutNode, ...]
    edges: tuple[LayoutEdge, ...]
    #: Step id -> id of the node that draws it.
    node_of: dict[str, str] = field(default_factory=dict)
    #: Whether the graph was too large for sibling and chain groups and is drawn in bands.
    banded: bool = False

    @property
    def groups(self) -> list[LayoutNode]:
        return [n for n in self.nodes if n.kind == "group"]


def layout_dag(steps: Sequence[tuple[str, Sequence[str]]]) -> Layout:
    """Lay out steps given as ``(id, dependsOn)`` in declaration order.

    Dependencies on ids that are not among the steps are ignored; the graph must
    be acyclic (the API refuses cycles at creation).
    """
    ids = [step_id for step_id, _ in steps]
    if not ids:
        return Layout(width=2 * MARGIN, height=2 * MARGIN, nodes=(), edges=())
    index = {step_id: i for i, step_id in enumerate(ids)}
    deps: list[list[int]] = [
        sorted(dict.fromkeys(index[d] for d in depends_on if d in index)) for _, depends_on in steps
    ]
    dependents: list[list[int]] = [[] for _ in ids]
    for i, ds in enumerate(deps):
        for d in ds:
            dependents[d].append(i)

    clusters = _group(deps, dependents, large=len(ids) > LARGE_GRAPH)
    banded = False
    if len(clusters) > MAX_DRAWN:
        clusters = _bands(deps, dependents)
        banded = True
    cluster_of = [0] * len(ids)
    for c, members in enumerate(clusters):
        for m in members:
            cluster_of[m] = c
    qdeps: list[list[int]] = []
    for members in clusters:
        inner = set(members)
        qdeps.append(sorted({cluster_of[d] for m in members for d in deps[m] if d not in inner}))

    layer = _longest_path_layers(qdeps)
    graph = _Graph.build(clusters, qdeps, layer)
    _order(graph)
    return _place(graph, clusters, ids, banded)


# --------------------------------------------------------------------------- grouping


def _group(deps: list[list[int]], dependents: list[list[int]], *, large: bool) -> list[list[int]]:
    """Clusters of step indices (a single step or a group), ordered by first member."""
    n = len(deps)
    min_siblings = SIBLINGS_LARGE if large else SIBLINGS_SMALL
    min_chain = CHAIN_LARGE if large else CHAIN_SMALL
    by_key: dict[tuple[tuple[int, ...], tuple[int, ...]], list[int]] = {}
    for i in range(n):
        by_key.setdefault((tuple(deps[i]), tuple(dependents[i])), []).append(i)
    cluster_id = [-1] * n
    clusters: list[list[int]] = []
    for members in by_key.values():
        if len(members) >= min_siblings:
            for m in members:
                cluster_id[m] = len(clusters)
            clusters.append(members)

    def single(i: int) -> bool:
        return cluster_id[i] < 0

    def follows(i: int) -> int | None:
        """The step that follows ``i`` in a chain, if any."""
        if len(dependents[i]) != 1:
            return None
        nxt = dependents[i][0]
        return nxt if len(deps[nxt]) == 1 and single(nxt) else None

    for i in range(n):
        if not single(i):
            continue
        if len(deps[i]) == 1 and single(deps[i][0]) and follows(deps[i][0]) == i:
            continue  # not the head of its chain
        chain = [i]
        nxt = follows(i)
        while nxt is not None:
            chain.append(nxt)
            nxt = follows(nxt)
        if len(chain) >= min_chain:
            for m in chain:
                cluster_id[m] = len(clusters)
            clusters.append(chain)
    for i in range(n):
        if single(i):
            cluster_id[i] = len(clusters)
            clusters.append([i])
    return sorted(clusters, key=lambda members: members[0])


def _bands(deps: list[list[int]], dependents: list[list[int]]) -> list[list[int]]:
    """Every step grouped with the others of a few consecutive layers (at most MAX_BANDS)."""
    layer = _longest_path_layers(deps)
    layers = max(layer) + 1
    size = math.ceil(layers / MAX_BANDS)
    bands: dict[int, list[int]] = {}
    for i, step_layer in enumerate(layer):
        bands.setdefault(step_layer // size, []).append(i)
    return [bands[b] for b in sorted(bands)]


def _longest_path_layers(deps: list[list[int]]) -> list[int]:
    """Layer of each node: 0 for a root, else one more than its deepest dependency."""
    n = len(deps)
    remaining = [len(ds) for ds in deps]
    succ: list[list[int]] = [[] for _ in range(n)]
    for i, ds in enumerate(deps):
        for d in ds:
            succ[d].append(i)
    layer = [0] * n
    ready = [i for i in range(n) if remaining[i] == 0]
    seen = 0
    while ready:
        i = heappop(ready)
        seen += 1
        for j in succ[i]:
            layer[j] = max(layer[j], layer[i] + 1)
            remaining[j] -= 1
            if remaining[j] == 0:
                heappush(ready, j)
    if seen != n:
        raise ValueError("the graph has a cycle")
    return layer


# --------------------------------------------------------------------------- ordering


@dataclass
class _Graph:
    """Drawn nodes (clusters, then dummy points) by layer, with adjacent-layer neighbours."""

    layer: list[int]
    #: Whether node i is a cluster (its index) or a dummy (-1).
    cluster: list[int]
    up: list[list[int]]
    down: list[list[int]]
    layers: list[list[int]]
    #: (source cluster, target cluster, nodes along the edge including both ends).
    routes: list[tuple[int, int, list[int]]]

    @classmethod
    def build(cls, clusters: list[list[int]], qdeps: list[list[int]], layer: list[int]) -> _Graph:
        n = len(clusters)
        dummies = sum(layer[c] - layer[d] - 1 for c in range(n) for d in qdeps[c])
        use_dummies = dummies <= MAX_DUMMIES
        graph = cls(
            layer=list(layer),
            cluster=list(range(n)),
            up=[[] for _ in range(n)],
            down=[[] for _ in range(n)],
            layers=[],
            routes=[],
        )
        for c in range(n):
            for d in qdeps[c]:
                chain = [d]
                if use_dummies:
                    for step_layer in range(layer[d] + 1, layer[c]):
                        graph.layer.append(step_layer)
                        graph.cluster.append(-1)
                        graph.up.append([])
                        graph.down.append([])
                        chain.append(len(graph.layer) - 1)
                chain.append(c)
                for a, b in itertools.pairwise(chain):
                    graph.down[a].append(b)
                    graph.up[b].append(a)
                graph.routes.append((d, c, chain))
        depth = max(graph.layer) + 1
        graph.layers = [[] for _ in range(depth)]
        # Initial order: declaration order (clusters are sorted by first member; the
        # dummies of an edge come after, in the order the edges were met).
        for node, node_layer in enumerate(graph.layer):
            graph.layers[node_layer].append(node)
        return graph


def _order(graph: _Graph) -> None:
    """Reorder each layer by barycentre sweeps, keeping the ordering with fewest crossings."""
    position = [0] * len(graph.layer)

    def renumber() -> None:
        for nodes in graph.layers:
            for p, node in enumerate(nodes):
                position[node] = p

    renumber()
    best = [list(nodes) for nodes in graph.layers]
    best_crossings = _crossings(graph, position)
    stale = 0
    for sweep in range(SWEEPS):
        if best_crossings == 0:
            break
        downward = sweep % 2 == 0
        span = range(1, len(graph.layers)) if downward else range(len(graph.layers) - 2, -1, -1)
        for i in span:
            nodes = graph.layers[i]
            neighbours = graph.up if downward else graph.down
            keys: dict[int, tuple[float, int]] = {}
            for node in nodes:
                around = neighbours[node]
                mean = (
                    sum(position[a] for a in around) / len(around)
                    if around
                    else float(position[node])
                )
                keys[node] = (mean, position[node])
            nodes.sort(key=keys.__getitem__)
            for p, node in enumerate(nodes):
                position[node] = p
        crossings = _crossings(graph, position)
        if crossings < best_crossings:
            best_crossings = crossings
            best = [list(nodes) for nodes in graph.layers]
            stale = 0
        else:
            stale += 1
            if stale >= PATIENCE:
                break
    graph.layers = best


def _crossings(graph: _Graph, position: list[int]) -> int:
    """Edge crossings between adjacent layers (inversions, counted with a Fenwick tree)."""
    total = 0
    for nodes in graph.layers[:-1]:
        pairs = sorted((position[a], position[b]) for a in nodes for b in graph.down[a])
        if not pairs:
            continue
        size = max(b for _, b in pairs) + 2
        tree = [0] * (size + 1)
        for seen, (_, b) in enumerate(pairs):
            # Edges already seen whose target lies below b cross this one.
            i = b + 1
            not_above = 0
            while i > 0:
                not_above += tree[i]
                i -= i & -i
            total += seen - not_above
            i = b + 1
            while i <= size:
                tree[i] += 1
                i += i & -i
    return total


# --------------------------------------------------------------------------- coordinates


def _place(graph: _Graph, clusters: list[list[int]], ids: list[str], banded: bool) -> Layout:
    count = len(graph.layer)
    width = [0.0] * count
    height = [float(DUMMY_HEIGHT)] * count
    for node in range(count):
        c = graph.cluster[node]
        if c >= 0:
            grouped = len(clusters[c]) > 1
            width[node] = GROUP_WIDTH if grouped else NODE_WIDTH
            height[node] = GROUP_HEIGHT if grouped else NODE_HEIGHT
    column_x: list[float] = []
    x = float(MARGIN)
    for nodes in graph.layers:
        column = max(width[n] for n in nodes) if nodes else 0.0
        column_x.append(x + column / 2)  # the column's centre line
        x += column + LAYER_GAP
    total_width = x - LAYER_GAP + MARGIN

    # Start stacked, then pull each node towards its neighbours' mean height.
    centre = [0.0] * count
    for nodes in graph.layers:
        y = 0.0
        for n in nodes:
            centre[n] = y + height[n] / 2
            y += height[n] + NODE_GAP
    for sweep in range(REFINE_PASSES):
        downward = sweep % 2 == 0
        span = range(1, len(graph.layers)) if downward else range(len(graph.layers) - 2, -1, -1)
        neighbours = graph.up if downward else graph.down
        for i in span:
            nodes = graph.layers[i]
            wanted = [
                sum(centre[a] for a in neighbours[n]) / len(neighbours[n])
                if neighbours[n]
                else centre[n]
                for n in nodes
            ]
            for n, value in zip(nodes, _fit(wanted, [height[n] for n in nodes]), strict=True):
                centre[n] = value
    top = min(centre[n] - height[n] / 2 for n in range(count))
    shift = MARGIN - top
    bottom = max(centre[n] + height[n] / 2 for n in range(count)) + shift

    drawn: dict[int, LayoutNode] = {}
    node_of: dict[str, str] = {}
    for nodes in graph.layers:
        for n in nodes:
            c = graph.cluster[n]
            if c < 0:
                continue
            members = tuple(ids[m] for m in clusters[c])
            grouped = len(members) > 1
            node_id = f"{GROUP_PREFIX}{c}" if grouped else members[0]
            for m in members:
                node_of[m] = node_id
            drawn[c] = LayoutNode(
                id=node_id,
                kind="group" if grouped else "step",
                members=members,
                label=f"{members[0]} … {members[-1]}" if grouped else members[0],
                layer=graph.layer[n],
                x=round(column_x[graph.layer[n]] - width[n] / 2),
                y=round(centre[n] + shift - height[n] / 2),
                width=width[n],
                height=height[n],
            )
    edges = []
    for source, target, chain in graph.routes:
        a, b = drawn[source], drawn[target]
        points = [(a.right, a.y + a.height / 2)]
        points.extend((column_x[graph.layer[d]], round(centre[d] + shift)) for d in chain[1:-1])
        points.append((b.x, b.y + b.height / 2))
        edges.append(LayoutEdge(source=a.id, target=b.id, points=tuple(points)))
    ordered = sorted(drawn.values(), key=lambda node: (node.layer, node.y, node.x))
    return Layout(
        width=total_width,
        height=math.ceil(bottom + MARGIN),
        nodes=tuple(ordered),
        edges=tuple(edges),
        node_of=node_of,
        banded=banded,
    )


def _fit(wanted: list[float], heights: list[float]) -> list[float]:
    """Centres as close as possible to ``wanted`` (least squares) keeping order and gaps.

    With ``offset[i]`` the least distance from the first centre to the i-th, the
    problem is an isotonic regression of ``wanted[i] - offset[i]``, solved by pool
    adjacent violators.
    """
    offsets = [0.0]
    for prev, cur in itertools.pairwise(heights):
        offsets.append(offsets[-1] + prev / 2 + NODE_GAP + cur / 2)
    blocks: list[list[float]] = []  # [mean, count]
    for value, offset in zip(wanted, offsets, strict=True):
        blocks.append([value - offset, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean, weight = blocks.pop()
            prev_mean, prev_weight = blocks[-1]
            total = prev_weight + weight
            blocks[-1] = [(prev_mean * prev_weight + mean * weight) / total, total]
    fitted: list[float] = []
    for mean, weight in blocks:
        fitted.extend([mean] * int(weight))
    return [value + offset for value, offset in zip(fitted, offsets, strict=True)]
