"""Algebraic simplification: a table of local rewrites, applied until nothing changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ember.passes import _simplify_patterns as patterns
from ember.passes import _simplify_rules as identities
from ember.passes._rewrite import Producers, Rewrite, rewrite_nodes, same_types

from ember.errors import EmberError
from ember.ir.graph import Graph, Node
from ember.pipeline import Pass

# The rule table, in the order rules are tried on each node. Each function carries its
# `# before -> after` comment; `_simplify_rules` explains the identities left out on purpose.
RULES: dict[str, identities.Rule] = {
    "mul-by-one": identities.mul_by_one,
    "add-zero": identities.add_zero,
    "sub-zero": identities.sub_zero,
    "div-by-one": identities.div_by_one,
    "div-by-power-of-two": identities.div_by_power_of_two,
    "neg-of-neg": identities.neg_of_neg,
    "drop-broadcast-operand": identities.drop_broadcast_operand,
    "transpose-identity": identities.transpose_identity,
    "transpose-of-transpose": identities.transpose_of_transpose,
    "reshape-same-shape": identities.reshape_same_shape,
    "reshape-of-reshape": identities.reshape_of_reshape,
    "cast-same-dtype": identities.cast_same_dtype,
    "cast-of-lossless-cast": identities.cast_of_lossless_cast,
    "squeeze-of-expand-dims": identities.squeeze_of_expand_dims,
    "dropout-inference": identities.dropout_inference,
    "log-of-softmax": patterns.log_of_softmax,
    "softmax-by-hand": patterns.softmax_by_hand,
    "silu-by-hand": patterns.silu_by_hand,
    "gelu-by-hand": patterns.gelu_by_hand,
}

MAX_ROUNDS = 16


@dataclass(frozen=True)
class Simplify(Pass):
    """Rewrite nodes with a table of exact algebraic identities, to a fixed point.

    Before:                                 After:
      %0 = neg(%x) : f32[4]                   %0 = neg(%x) : f32[4]
      %1 = neg(%0) : f32[4]                   %1 = neg(%0) : f32[4]
      %2 = mul(%1, %one) : f32[4]             %3 = silu(%x) : f32[4]
      %3 = sigmoid(%2) : f32[4]               return %3
      %4 = mul(%2, %3) : f32[4]
      return %4

    (`dce` then removes the nodes left unused.) `rules` picks rules by name, joined with
    `+` (`simplify{rules=neg-of-neg+mul-by-one}`), or "all". A match is dropped when its
    replacement would change a value's type, so broadcasting never changes a shape and a
    layout never vanishes. Impure nodes are never rewritten, except `dropout` in inference,
    which is the identity.
    """

    name: ClassVar[str] = "simplify"

    rules: str = "all"

    def __post_init__(self) -> None:
        self.selected()  # unknown rule names fail when the pipeline is built

    def selected(self) -> list[identities.Rule]:
        """The rule functions this instance applies, in table order."""
        if self.rules == "all":
            return list(RULES.values())
        names = [name for name in self.rules.replace(" ", "+").split("+") if name]
        unknown = [name for name in names if name not in RULES]
        if unknown:
            raise EmberError(f"simplify: unknown rule {unknown[0]!r} (rules: "
                             f"{', '.join(RULES)}, or all)")
        return [RULES[name] for name in RULES if name in names]

    def run(self, graph: Graph) -> Graph:
        table = self.selected()

        def apply_first_rule(node: Node, producers: Producers) -> Rewrite | None:
            for rule in table:
                rewrite = rule(node, producers)
                if rewrite is not None and same_types(node.outputs, rewrite.values):
                    return rewrite
            return None

        result = graph
        for _ in range(MAX_ROUNDS):
            rewritten = rewrite_nodes(result, apply_first_rule)
            if rewritten is result:
                break
            result = rewritten
        return result
