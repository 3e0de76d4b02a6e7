"""Workflow graphs: step ids and edges, immutable once created, cached per process.

Settling an answer needs the answered step's dependents and, for a request, its
ancestors; reading them from the steps table on every hop would cost a query
per hop. A graph never changes after its workflow is created, so each process
keeps the graphs it has used lately (up to ``GRAPH_CACHE_STEPS`` steps in all,
least recently used first out) and reads a graph at most once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from app import dag
from app.models import Step

#: How many workflow graphs (counted in steps) stay cached.
GRAPH_CACHE_STEPS = 200_000


@dataclass(slots=True)
class Graph:
    """A workflow's DAG."""

    depends_on: dict[str, list[str]]
    dependents: dict[str, list[str]] = field(default_factory=dict)
    _positions: dict[str, int] | None = None

    def __post_init__(self) -> None:
        if not self.dependents:
            self.dependents = dag.dependents_of(self.depends_on)

    @property
    def size(self) -> int:
        return len(self.depends_on)

    @property
    def positions(self) -> dict[str, int]:
        if self._positions is None:
            self._positions = dag.positions(self.depends_on)
        return self._positions


class GraphCache:
    """The graphs this process has used lately, read from the database on a miss."""

    def __init__(self, budget: int = GRAPH_CACHE_STEPS) -> None:
        self._graphs: OrderedDict[str, Graph] = OrderedDict()
        self._steps = 0
        self._budget = budget

    def remember(
        self,
        workflow_id: str,
        depends_on: dict[str, list[str]],
        dependents: dict[str, list[str]] | None = None,
    ) -> Graph:
        graph = Graph(depends_on, dependents or {})
        old = self._graphs.pop(workflow_id, None)
        if old is not None:
            self._steps -= old.size
        self._graphs[workflow_id] = graph
        self._steps += graph.size
        while self._steps > self._budget and len(self._graphs) > 1:
            _, evicted = self._graphs.popitem(last=False)
            self._steps -= evicted.size
        return graph

    async def get(self, workflow_id: str) -> Graph:
        graph = self._graphs.get(workflow_id)
        if graph is None:
            rows = await Step.filter(workflow_id=workflow_id).values_list("step_id", "depends_on")
            return self.remember(workflow_id, {sid: list(deps) for sid, deps in rows})
        self._graphs.move_to_end(workflow_id)
        return graph
