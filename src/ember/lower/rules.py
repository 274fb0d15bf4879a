"""The lowering registry: how each op becomes loop IR.

Three tables, filled by decorators in the `ember/lower/ops_*.py` modules. Importing the
`ember.lower` package imports all of those modules (and `import ember` imports `ember.lower`),
so the tables are complete before any lowering runs; nothing fills them on first use.

- `SCALAR_RULES[op](node, operands) -> Expr`: elementwise ops as scalar expressions of their
  operands. One table serves a standalone node and every node of a fused elementwise region,
  which is how a fused chain becomes one loop nest with no intermediate buffers.
- `LOWERINGS[op](node, ctx) -> statements`: any op as loops over its input and output buffers.
- `TARGET_RULES[kind][op](node, ctx, epilogue=None) -> statements | None`: faster lowerings that a
  backend provides for its targets (the CPU's packed GEMM and implicit-GEMM conv), used at
  opt_level 3. A rule returns None where it does not apply, and the general rule is used.
  Lowering never imports a backend: `ember.backend.cpu` fills its rows with `@target_rule`
  when `import ember` imports it, and lowering looks them up by `ctx.target.kind`.

    @scalar_rule("relu")
    def relu(node, (x,)):          # max(x, 0)
        return Binary("max", x, imm(0, x.dtype))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ember.errors import LoweringError
from ember.ir.graph import Node
from ember.ir.types import DType, TensorType
from ember.lower.loops import Buffer, Expr, Names, Stmt
from ember.target import Target

ScalarRule = Callable[[Node, Sequence[Expr]], Expr]
Lowering = Callable[[Node, "LowerContext"], Sequence[Stmt]]

SCALAR_RULES: dict[str, ScalarRule] = {}
LOWERINGS: dict[str, Lowering] = {}
# Faster target-neutral lowerings used at opt_level 3 (pooling windows inside the input); each
# returns None where it does not apply, and the general rule of LOWERINGS is used instead.
SCHEDULED: dict[str, Callable[..., Sequence[Stmt] | None]] = {}
TargetRule = Callable[..., "Sequence[Stmt] | None"]
TARGET_RULES: dict[str, dict[str, TargetRule]] = {"cpu": {}, "cuda": {}}


def scalar_rule(*ops: str) -> Callable[[ScalarRule], ScalarRule]:
    """Register a scalar-expression rule for elementwise ops."""

    def register(fn: ScalarRule) -> ScalarRule:
        for op in ops:
            SCALAR_RULES[op] = fn
        return fn

    return register


def lowers(*ops: str, scheduled: bool = False) -> Callable[[Lowering], Lowering]:
    """Register a target-neutral loop-nest lowering of ops (a scheduled one: opt_level 3)."""

    def register(fn: Lowering) -> Lowering:
        for op in ops:
            (SCHEDULED if scheduled else LOWERINGS)[op] = fn  # type: ignore[index]
        return fn

    return register


def target_rule(kind: str, *ops: str) -> Callable[[TargetRule], TargetRule]:
    """Register a backend's lowering of ops for targets of `kind` ("cpu", "cuda")."""

    def register(fn: TargetRule) -> TargetRule:
        for op in ops:
            TARGET_RULES[kind][op] = fn
        return fn

    return register


def target_rule_for(target: Target, op: str) -> TargetRule | None:
    """The backend's rule for `op` on `target`, if it has one."""
    return TARGET_RULES.get(target.kind, {}).get(op)


def scheduled_lowering_for(target: Target, op: str) -> TargetRule | None:
    """The opt_level 3 lowering of `op`: the target's rule, else a target-neutral one."""
    return target_rule_for(target, op) or SCHEDULED.get(op)


@dataclass
class LowerContext:
    """What a lowering rule works with: its buffers, fresh names, and scratch memory."""

    node: Node
    inputs: list[Buffer]  # one per node input, in order
    outputs: list[Buffer]  # one per node output
    names: Names = field(default_factory=Names)
    scratch_buffers: list[Buffer] = field(default_factory=list)
    options: dict[str, object] = field(default_factory=dict)  # schedule knobs (opt level, ...)
    errors: list[str] = field(default_factory=list)  # run-time error messages of the program
    status: Buffer | None = None  # where a kernel writes an error code (see raise_if)
    # The data of buffers that hold the model's constants (weights), and the constants a rule
    # made from them at compile time (a weight packed for a GEMM), each with its buffer.
    known: dict[Buffer, Any] = field(default_factory=dict)
    made_constants: list[tuple[Buffer, Any]] = field(default_factory=list)
    target: Target = field(default_factory=Target.host)

    def inner(self, node: Node, inputs: list[Buffer], outputs: list[Buffer]) -> LowerContext:
        """A context for a node inside this one's region: same names, scratch, constants."""
        return LowerContext(node, inputs, outputs, self.names, self.scratch_buffers,
                            self.options, self.errors, self.status, self.known,
                            self.made_constants, self.target)

    @property
    def input_types(self) -> list[TensorType]:
        return [v.type for v in self.node.inputs]

    @property
    def output_types(self) -> list[TensorType]:
        return [v.type for v in self.node.outputs]

    def scratch(self, dtype: DType, size: int, hint: str = "tmp") -> Buffer:
        """A temporary buffer private to this kernel (placed in the arena's scratch area)."""
        buffer = Buffer(f"{hint}{len(self.scratch_buffers)}", dtype, max(int(size), 1))
        self.scratch_buffers.append(buffer)
        return buffer

    def constant_data(self, index: int) -> Any:
        """The numpy data of input `index` when it is a constant of the model, else None."""
        return self.known.get(self.inputs[index])

    def constant(self, data: Any, hint: str = "packed") -> Buffer:
        """A buffer holding `data` (a numpy array made at compile time), read-only at run time."""
        dtype = DType.from_numpy(data.dtype)
        buffer = Buffer(f"{hint}{len(self.made_constants)}", dtype, max(int(data.size), 1))
        self.made_constants.append((buffer, data))
        return buffer

    def raise_if(self, cond: Expr, message: str) -> Stmt:
        """A statement that makes the call raise ExecutionError(message) when `cond` holds.

        The kernel writes the message's code into the program's status word; the runtime
        checks it after the call. Never a silently wrong answer (nor an out-of-bounds read:
        guard the access with the same condition).
        """
        from ember.lower.loops import If, Store, imm, index_imm

        if self.status is None:
            self.status = Buffer("status", DType.I64, 1)
        location = f" (traced at {self.node.loc})" if self.node.loc else ""
        self.errors.append(f"{self.node.op}: {message}{location}")
        code = imm(len(self.errors), DType.I64)
        return If(cond, (Store(self.status, index_imm(0), code),))

    def fail(self, message: str) -> LoweringError:
        return LoweringError(str(self.node.replace(body=None)), message)


def lowering_for(op: str) -> Lowering | None:
    """The loop lowering of `op`, if any."""
    return LOWERINGS.get(op)


def scalar_rule_for(op: str) -> ScalarRule | None:
    return SCALAR_RULES.get(op)
