"""Workflow graphs: step ids and edges, immutable once created, cached per process.

Settling an answer needs the answered step's dependents and, for a request, its
ancestors; reading them from the steps table on every hop would cost a query
per hop. A graph never changes after its workflow is created, so each process
keeps the graphs it has used lately (up to ``GRAPH_CACHE_STEPS`` steps in all,
least recently used first out) and reads a graph at most once.

With a graph go the states of its settled steps (status, result, error) that
this process has read for ``previousSteps``: a settled step's state does not
change until the step is re-opened by a retry, which bumps the workflow's
``reopened`` count, so the states are kept while that count is the one they
were read under. Along a chain of thousands of steps, each hop then reads the
one ancestor it has not seen rather than all of them. Their size is bounded by
``SETTLED_STATE_BYTES`` (least recently used graphs lose theirs first).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from app import dag
from app.models import Step

#: How many workflow graphs (counted in steps) stay cached.
GRAPH_CACHE_STEPS = 200_000
#: How much settled state (the JSON of results and errors) stays cached, in bytes.
SETTLED_STATE_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class Graph:
    """A workflow's DAG."""

    depends_on: dict[str, list[str]]
    dependents: dict[str, list[str]] = field(default_factory=dict)
    _positions: dict[str, int] | None = None
    #: Settled steps' ``{"status", "result", "error"}``, read under ``settled_reopened``.
    settled: dict[str, dict[str, Any]] = field(default_factory=dict)
    settled_reopened: int = -1
    settled_bytes: int = 0

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

    def __init__(
        self, budget: int = GRAPH_CACHE_STEPS, state_budget: int = SETTLED_STATE_BYTES
    ) -> None:
        self._graphs: OrderedDict[str, Graph] = OrderedDict()
        self._steps = 0
        self._budget = budget
        self._state_bytes = 0
        self._state_budget = state_budget

    def settled(self, graph: Graph, reopened: int) -> dict[str, dict[str, Any]]:
        """The graph's cached settled states, emptied if steps were re-opened since."""
        if graph.settled_reopened != reopened:
            self._state_bytes -= graph.settled_bytes
            graph.settled, graph.settled_bytes = {}, 0
            graph.settled_reopened = reopened
        return graph.settled

    def keep_settled(self, graph: Graph, step_id: str, state: dict[str, Any], size: int) -> None:
        """Cache a settled step's state (``size``: its JSON's length), within the budget."""
        if step_id in graph.settled or size > self._state_budget:
            return
        graph.settled[step_id] = state
        graph.settled_bytes += size
        self._state_bytes += size
        for other in list(self._graphs.values()):
            if self._state_bytes <= self._state_budget:
                break
            self._state_bytes -= other.settled_bytes
            other.settled, other.settled_bytes = {}, 0

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
            self._state_bytes -= old.settled_bytes
        self._graphs[workflow_id] = graph
        self._steps += graph.size
        while self._steps > self._budget and len(self._graphs) > 1:
            _, evicted = self._graphs.popitem(last=False)
            self._steps -= evicted.size
            self._state_bytes -= evicted.settled_bytes
        return graph

    async def get(self, workflow_id: str) -> Graph:
        graph = self._graphs.get(workflow_id)
        if graph is None:
            rows = await Step.filter(workflow_id=workflow_id).values_list("step_id", "depends_on")
            return self.remember(workflow_id, {sid: list(deps) for sid, deps in rows})
        self._graphs.move_to_end(workflow_id)
        return graph
