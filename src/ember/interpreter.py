"""The reference interpreter: runs any graph op by op with the numpy references of the registry.

It is the ground truth of every numerical test and the naive baseline (`opt_level=0`) of every
benchmark. Like torch.fx's Interpreter, it keeps an environment from values to arrays and runs
one method per kind of node: a plain op runs its `OpDef.reference`, a region op (`fused`) runs
its body as a graph.

The caller owns what `run` returns: numpy references may return views (`reshape`,
`expand_dims`) and a graph may return an input, a constant or one value twice, so a result that
may share memory with an input, a constant of the graph or another result is copied; every
other result is a fresh array already and is returned as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ember.errors import EmberError, ExecutionError
from ember.ir.graph import Graph, Node, Value
from ember.ir.ops import get_op
from ember.ir.types import TensorType


class Interpreter:
    """Runs a graph on numpy arrays: `Interpreter(graph).run(*arrays) -> tuple of arrays`."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.constants = _constant_arrays(graph)

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        """The graph's results on `args`, as arrays the caller owns (see the module docstring)."""
        arrays = check_inputs(self.graph, args)
        return self.owned(self.run_graph(self.graph, arrays), arrays)

    def owned(self, results: Sequence[np.ndarray], inputs: Sequence[np.ndarray]
              ) -> tuple[np.ndarray, ...]:
        """`results` with a copy of each one that may share memory with an input, a constant or
        an earlier result."""
        taken = [*inputs, *self.constants]
        kept = []
        for result in results:
            if any(np.may_share_memory(result, other) for other in taken):
                result = result.copy()
            kept.append(result)
            taken.append(result)
        return tuple(kept)

    def run_graph(self, graph: Graph, arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        env: dict[Value, np.ndarray] = dict(zip(graph.inputs, arrays, strict=True))
        for node in graph.nodes:
            inputs = tuple(env[v] for v in node.inputs)
            results = self.run_node(node, inputs)
            for value, result in zip(node.outputs, results, strict=True):
                env[value] = result
        return tuple(env[v] for v in graph.outputs)

    def run_node(self, node: Node, inputs: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        if node.body is not None:
            return self.run_graph(node.body, inputs)
        opdef = get_op(node.op)
        try:
            with np.errstate(all="ignore"):  # inf and nan are values, as in compiled code
                results = opdef.evaluate(inputs, node.attrs)
        except EmberError:
            raise
        except Exception as err:
            where = f" (traced at {node.loc})" if node.loc else ""
            raise ExecutionError(f"{node.op} failed{where}: {err}") from err
        return tuple(_conform(r, v.type) for r, v in zip(results, node.outputs, strict=True))


def _constant_arrays(graph: Graph) -> list[np.ndarray]:
    """The data of every `const` node of the graph and of its regions."""
    arrays = []
    for node in graph.nodes:
        if node.body is not None:
            arrays += _constant_arrays(node.body)
        data = getattr(node.attrs.get("value"), "data", None) if node.op == "const" else None
        if data is not None:
            arrays.append(data)
    return arrays


def _conform(array: np.ndarray, type_: TensorType) -> np.ndarray:
    """The reference's result as an array of exactly the declared dtype and shape."""
    array = np.asarray(array)
    if array.dtype != type_.dtype.numpy:
        array = array.astype(type_.dtype.numpy)
    assert array.shape == type_.shape, f"reference gave {array.shape}, rule said {type_}"
    return array


def check_inputs(graph: Graph, args: Sequence[object]) -> list[np.ndarray]:
    """Inputs as arrays of the graph's input types; ExecutionError names the first mismatch."""
    if len(args) != len(graph.inputs):
        raise ExecutionError(f"@{graph.name} takes {len(graph.inputs)} inputs, got {len(args)}")
    arrays = []
    for index, (arg, value) in enumerate(zip(args, graph.inputs, strict=True)):
        array = np.asarray(arg)
        expected = value.type
        name = value.hint or f"input {index}"
        if array.shape != expected.shape:
            raise ExecutionError(f"{name}: expected shape {list(expected.shape)}, got "
                                 f"{list(array.shape)} (the graph was traced for {expected})")
        if array.dtype != expected.dtype.numpy:
            raise ExecutionError(f"{name}: expected dtype {expected.dtype.numpy}, got "
                                 f"{array.dtype} (the graph was traced for {expected})")
        arrays.append(array)
    return arrays


def interpret(graph: Graph, *args: np.ndarray) -> tuple[np.ndarray, ...]:
    """Run `graph` on `args` with the reference interpreter."""
    return Interpreter(graph).run(*args)
