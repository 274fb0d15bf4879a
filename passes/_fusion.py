"""Fusion planning for the `fuse` pass: which nodes go into which group, and why.

The planner walks the nodes in topological order. Each fusible node starts as its own group
and then tries to join the groups of its producers, best candidates first (matmul/conv groups,
then reductions, then elementwise groups; ties in operand order). A join is refused when

- the kinds do not mix: a matmul/conv group takes only an elementwise epilogue of its own output
  shape (never a prologue, never a reduction, never a second anchor), and all reductions of one
  group must read inputs of the same shape;
- the merged group would exceed `max_ops` nodes;
- it would create a cycle: checked on the quotient graph (one vertex per group), where merging
  two adjacent groups is safe unless another path already links them. The search for such a
  path visits only groups of nodes already walked: a node after the current one reaches none
  of them, so a chain's check costs its node's out-degree and a long chain plans in linear time.

Every attempt is recorded as a `Decision`, which `format_decisions` prints for
`ember ir --explain fusion`. A value that a group computes and something outside the group
reads (or the graph returns) becomes an extra output of the fused node; the producer is not
left outside, so fusion never recomputes anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ember.ir.graph import Graph, Node
from ember.ir.printer import value_names

from ._fusion_rules import (
    ANCHOR_KINDS,
    Group,
    kind_conflict,
    new_group,
    role,
    unfusible_reason,
)
from ._liveness import ancestors

_CANDIDATE_ORDER = {"matmul": 0, "conv": 0, "reduction": 1, "elementwise": 2}


@dataclass(frozen=True)
class Decision:
    """One fusion decision about a node, as a readable sentence."""

    node: str  # the node the decision is about, as "add %9"
    fused: bool  # True when something was fused (or fused output was added)
    message: str  # "relu %5 fused into the matmul %3 group (elementwise epilogue)"

    def __str__(self) -> str:
        return self.message


@dataclass
class FusionPlan:
    """The groups of two or more nodes, in order of their first node, and the decisions."""

    groups: list[Group]
    decisions: list[Decision] = field(default_factory=list)


class _Planner:
    """Greedy producer-consumer grouping over one graph (see the module docstring)."""

    def __init__(self, graph: Graph, max_ops: int,
                 limits: dict[int, frozenset[int]] | None = None, phases: bool = False) -> None:
        self.graph = graph
        self.max_ops = max_ops
        # anchor index -> the only nodes its group may hold (see `epilogue_limits`)
        self.limits = limits or {}
        self.names = value_names(graph)
        self.index = {node: i for i, node in enumerate(graph.nodes)}
        # with phases: the nodes graph output 0 (a train step's loss) depends on
        self.forward = ({self.index[n] for n in ancestors(graph, graph.outputs[:1])}
                        if phases else None)
        self.group_of = {i: i for i in range(len(graph.nodes))}  # node index -> group id
        self.groups: dict[int, Group] = {}
        self.decisions: list[Decision] = []
        self.current = -1  # the node being visited; groups are named by their first node
        # the quotient graph: group id -> the groups it feeds / reads from
        self.succ: dict[int, set[int]] = {i: set() for i in range(len(graph.nodes))}
        self.pred: dict[int, set[int]] = {i: set() for i in range(len(graph.nodes))}
        for i, node in enumerate(graph.nodes):
            for value in node.inputs:
                if (producer := graph.producer(value)) is not None:
                    self.succ[self.index[producer]].add(i)
                    self.pred[i].add(self.index[producer])

    # --- names for messages -------------------------------------------------------------------

    def label(self, index: int) -> str:
        node = self.graph.nodes[index]
        return f"{node.op} %{self.names[node.outputs[0]]}" if node.outputs else node.op

    def group_label(self, gid: int) -> str:
        group = self.groups[gid]
        return self.label(group.anchor if group.anchor is not None else group.members[0])

    def record(self, index: int, fused: bool, message: str) -> None:
        self.decisions.append(Decision(self.label(index), fused, message))

    # --- the walk -----------------------------------------------------------------------------

    def plan(self) -> FusionPlan:
        for index, node in enumerate(self.graph.nodes):
            self.visit(index, node)
        self.explain_results()
        groups = sorted((g for g in self.groups.values() if len(g.members) > 1),
                        key=lambda g: g.members[0])
        return FusionPlan(groups, self.decisions)

    def visit(self, index: int, node: Node) -> None:
        self.current = index
        if node.op == "const":
            return
        kind = role(node)
        if kind is None:
            self.record(index, False, self.why_not_fusible(index, node))
            return
        self.groups[index] = new_group(index, node)
        if kind == "anchor":
            self.record(index, False, f"{self.label(index)} starts a {ANCHOR_KINDS[node.op]} "
                                      "group (anchors take no prologue)")
            return
        candidates = self.candidates(index, node)
        if not candidates:
            self.record(index, False, f"{self.label(index)} starts a new group")
        for gid in candidates:
            self.try_join(index, gid)

    def why_not_fusible(self, index: int, node: Node) -> str:
        return f"{self.label(index)} not fused: {unfusible_reason(node)}"

    def candidates(self, index: int, node: Node) -> list[int]:
        """Distinct producer groups of `node` that could take it, best first."""
        found: list[int] = []
        for value in node.inputs:
            producer = self.graph.producer(value)
            if producer is None or producer.op == "const":
                continue
            gid = self.group_of[self.index[producer]]
            if gid in found:
                continue
            if gid not in self.groups:
                self.record(index, False, f"{self.label(index)} not fused with "
                                          f"{self.label(self.index[producer])}: "
                                          f"{unfusible_reason(producer)}")
                continue
            found.append(gid)
        return sorted(found, key=lambda gid: _CANDIDATE_ORDER[self.groups[gid].kind])

    def try_join(self, index: int, gid: int) -> None:
        mine = self.group_of[index]
        if mine == gid:
            return
        reason = self.refusal(index, mine, gid)
        if reason is not None:
            self.record(index, False, f"{self.label(index)} not fused with the "
                                      f"{self.group_label(gid)} group: {reason}")
            return
        why = self.reason(index, mine, gid)
        if len(self.groups[mine].members) == 1:
            message = f"{self.label(index)} fused into the {self.group_label(gid)} group ({why})"
        else:
            message = (f"the {self.group_label(gid)} group merged with the "
                       f"{self.group_label(mine)} group at {self.label(index)} ({why})")
        self.record(index, True, message)
        self.merge(mine, gid)

    # --- rules --------------------------------------------------------------------------------

    def refusal(self, index: int, mine: int, gid: int) -> str | None:
        """Why the group `mine` (holding node `index`) may not merge with `gid`, or None."""
        first, second = self.groups[mine], self.groups[gid]
        reason = kind_conflict(self.graph, index, first, second)
        if reason is not None:
            return reason
        if self.forward is not None and index not in self.forward and any(
                member in self.forward for member in second.members):
            return ("the backward part joins no kernel of the forward part (what it "
                    "recomputes stays with its reader, and nothing more is kept)")
        for anchored, other in ((first, second), (second, first)):
            allowed = self.limits.get(anchored.anchor) if anchored.anchor is not None else None
            if allowed is not None and not set(other.members) - allowed <= self.dead():
                return ("the GEMM epilogue ends at its one result (a GEMM store writes one value "
                        "per element)")
        if len(first.members) + len(second.members) > self.max_ops:
            return f"stopped: max-ops={self.max_ops}"
        through = self.cycle_through(mine, gid)
        if through is not None:
            return f"would create a cycle through {self.group_label_any(through)}"
        return None

    def group_label_any(self, gid: int) -> str:
        return self.group_label(gid) if gid in self.groups else self.label(gid)

    def cycle_through(self, first: int, second: int) -> int | None:
        """A group on another path between the two groups (merging would close a cycle)."""
        for source, target in ((first, second), (second, first)):
            seen: set[int] = set()  # groups found not to reach `target`
            for step in sorted(self.succ[source]):
                if step != target and self.reaches(step, target, seen):
                    return step
        return None

    def reaches(self, start: int, target: int, seen: set[int]) -> bool:
        """Whether a path leads from group `start` to group `target`. Groups after the current
        node are unwalked single nodes: they feed only later nodes, so the search skips them."""
        stack = [start]
        while stack:
            gid = stack.pop()
            if gid == target:
                return True
            if gid > self.current or gid in seen:
                continue
            seen.add(gid)
            stack.extend(self.succ[gid])
        return False

    def reason(self, index: int, mine: int, gid: int) -> str:
        first, second = self.groups[mine], self.groups[gid]
        if second.anchor is not None:
            return "elementwise epilogue"
        if role(self.graph.nodes[index]) == "reduction":
            return "elementwise prologue" if second.kind == "elementwise" else "same reduced shape"
        if second.kind == "reduction" or first.kind == "reduction":
            return "reduction epilogue"
        return "elementwise chain"

    def merge(self, mine: int, gid: int) -> None:
        first, second = self.groups.pop(mine), self.groups.pop(gid)
        keep = min(mine, gid)
        anchor = first.anchor if first.anchor is not None else second.anchor
        kinds = {first.kind, second.kind} - {"elementwise"}
        self.groups[keep] = Group(
            sorted(first.members + second.members),
            kinds.pop() if kinds else "elementwise",
            anchor,
            first.reduced_shape or second.reduced_shape,
        )
        for member in (second if keep == mine else first).members:
            self.group_of[member] = keep
        gone = max(mine, gid)  # its edges move to `keep`
        for succ in self.succ.pop(gone):
            self.pred[succ].discard(gone)
            if succ != keep:
                self.pred[succ].add(keep)
                self.succ[keep].add(succ)
        for pred in self.pred.pop(gone):
            self.succ[pred].discard(gone)
            if pred != keep:
                self.succ[pred].add(keep)
                self.pred[keep].add(pred)

    # --- after the walk -----------------------------------------------------------------------

    def epilogue_limits(self) -> dict[int, frozenset[int]]:
        """For each matmul/conv group whose epilogue has several results (an optimizer update
        after a weight gradient: new weight and moments; a ReLU's output and its backward
        mask), the largest part of it with one result: the anchor plus the ancestors, within
        the group, of one result. A GEMM epilogue stores one value per element; a group with
        more results would lower to plain loops. Planning again under these limits lets the
        rest fuse with whatever else it fits (the moment update's other operands)."""
        limits = {}
        for group in self.groups.values():
            if group.anchor is None or len(group.members) == 1:
                continue
            if len(self.results(group.members)) <= 1:
                continue
            best = [group.anchor]
            for value in self.results(group.members):
                kept = self.ancestors_within(value, set(group.members))
                if len(self.results(kept)) == 1 and len(kept) > len(best):
                    best = kept
            limits[group.anchor] = frozenset(best)
        return limits

    def results(self, members: Sequence[int]) -> list[object]:
        """Values computed by `members` that the graph returns or a live node outside reads
        (a dead reader is no reason to cut a group: dce removes it)."""
        inside = set(members)
        live = self.live()
        return [v for m in members for v in self.graph.nodes[m].outputs
                if v in self.graph.outputs
                or any(self.index[u] not in inside and self.index[u] in live
                       for u in self.graph.users.get(v, []))]

    def dead(self) -> set[int]:
        """Indices of the nodes whose results reach no graph output (they may join anything)."""
        if not hasattr(self, "_dead"):
            self._dead = set(range(len(self.graph.nodes))) - self.live()
        return self._dead

    def live(self) -> set[int]:
        """Indices of the nodes whose results reach the graph's outputs."""
        if not hasattr(self, "_live"):
            needed = set(self.graph.outputs)
            live: set[int] = set()
            for index in range(len(self.graph.nodes) - 1, -1, -1):
                node = self.graph.nodes[index]
                if any(v in needed for v in node.outputs):
                    live.add(index)
                    needed.update(node.inputs)
            self._live = live
        return self._live

    def ancestors_within(self, value: object, members: set[int]) -> list[int]:
        """The members `value` depends on (its producer included), ascending."""
        found: set[int] = set()
        stack = [value]
        while stack:
            producer = self.graph.producer(stack.pop())
            if producer is None or self.index[producer] not in members:
                continue
            if self.index[producer] not in found:
                found.add(self.index[producer])
                stack.extend(producer.inputs)
        return sorted(found)

    def explain_results(self) -> None:
        for gid in sorted(self.groups):
            group = self.groups[gid]
            if len(group.members) == 1:
                self.record(gid, False, f"{self.label(gid)} stays a plain node "
                                        "(its group has one op)")
                continue
            members = set(group.members)
            for member in group.members:
                self.explain_outputs(member, members, gid)

    def explain_outputs(self, member: int, members: set[int], gid: int) -> None:
        for value in self.graph.nodes[member].outputs:
            readers = [f"%{self.names[u.outputs[0]]}" if u.outputs else u.op
                       for u in self.graph.users.get(value, []) if self.index[u] not in members]
            if value in self.graph.outputs:
                readers.append("the graph's return")
            if readers and member != max(members):
                self.record(member, True, f"%{self.names[value]} in the {self.group_label(gid)} "
                                          f"group has a user outside the group "
                                          f"({', '.join(readers)}): it becomes an extra output "
                                          "of the fused node")


def plan_fusion(graph: Graph, max_ops: int = 16, phases: bool = False) -> FusionPlan:
    """The fusion groups of `graph` and the decisions that formed them. With `phases`, graph
    output 0 (a train step's loss) splits the graph: a node it does not depend on never joins
    a group of nodes it depends on.

    A plan whose GEMM epilogues have several results is made again with those epilogues cut
    to one result (`_Planner.epilogue_limits`); limits only shrink groups, so a few rounds
    settle, and a group still left with several results lowers correctly, only slower."""
    limits: dict[int, frozenset[int]] = {}
    for _ in range(4):
        planner = _Planner(graph, max_ops, limits, phases)
        plan = planner.plan()
        more = planner.epilogue_limits()
        if not more:
            break
        limits = {**limits, **more}
    return plan


def explain_fusion(graph: Graph, options: dict[str, object] | None = None) -> list[Decision]:
    """For each candidate node and edge, whether it was fused and why (options as the pass's)."""
    options = {key.replace("-", "_"): value for key, value in (options or {}).items()}
    return plan_fusion(graph, int(options.get("max_ops", 16)),  # type: ignore[arg-type]
                       bool(options.get("phases", False))).decisions


def format_decisions(decisions: Sequence[Decision]) -> str:
    """One line per decision: `fused  ...` or `kept   ...`."""
    return "\n".join(("fused  " if d.fused else "kept   ") + d.message for d in decisions)
