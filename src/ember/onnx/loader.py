"""`ember.onnx.load`: an ONNX model as something `ember.trace` and `ember.compile` accept.

    model = ember.onnx.load("resnet.onnx", shapes={"input": (1, 3, 224, 224)})
    exe = ember.compile(model, *model.example_inputs)

The loaded model is a callable: traced with one tensor per graph input, it runs each node's
converter in topological order and returns the graph outputs. Initializers become named
constants. Values known at import time (initializers, Constant, Shape, and any node whose
inputs are all small known values) are computed with numpy there, so the shape arithmetic of
exported models never reaches the Ember graph.

A model is checked before anything is computed from it: every value is written once (by one
node output, a graph input or an initializer), each node's attributes and input and output
counts fit its operator's ONNX schema, and dimensions are non-negative. Sizes are bounded: no
tensor of the model (a declared input, a value a node makes) may exceed TENSOR_BYTES (4 GiB),
and no value computed at import time may exceed FOLD_BYTES (64 MiB); bigger known work stays
in the graph as an op, or is an error where it cannot. A converter that fails on a malformed
node raises an EmberError naming the node.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ember.errors import EmberError, UnsupportedError
from ember.frontend import tracer
from ember.frontend.tensor import Tensor
from ember.ir.attrs import Const
from ember.ir.types import DType
from ember.onnx import control, functions
from ember.onnx.converters import CONVERTERS, NodeContext, Slot, onnx_dtype
from ember.onnx.converters.base import (
    FOLD_BYTES,
    TENSOR_BYTES,
    ByFunction,
    NeedsKnownValue,
    format_bytes,
    shape_bytes,
)

# A node whose inputs are all known is evaluated at import time when they hold at most this
# many elements in all; bigger constant work (a transposed weight) stays in the graph, where
# its initializer keeps its name and fold-constants can still evaluate it.
FOLD_LIMIT = 4096
FILE_LIMIT = 2**31 - 1  # protobuf's limit on one serialized message

Dim = int | str  # a static size, or the name of a symbolic dimension
# The suffix naming what a present optional graph input holds (`opt` holds `opt#value`).
OPTIONAL_VALUE = "#value"
# Operators on sequences and optionals, resolved by the importer (OnnxModel._sequence_op).
SEQUENCE_OPS = frozenset({
    "SequenceEmpty", "SequenceConstruct", "SequenceLength", "SequenceAt", "SequenceInsert",
    "SequenceErase", "ConcatFromSequence", "SplitToSequence", "SequenceMap", "Optional",
    "OptionalHasElement", "OptionalGetElement"})


@dataclass(frozen=True)
class InputSpec:
    """One graph input as the model declares it."""

    name: str
    dtype: DType
    dims: tuple[Dim, ...]
    # for a tensor inside a sequence or optional graph input: that input's name and kind
    # ("sequence" or "optional"); the tensor is the model's argument
    container: str = ""
    kind: str = "tensor"
    ranked: bool = True  # False when the model declares no shape at all (any rank)


class OnnxModel:
    """An imported ONNX graph: call it on traced tensors, one per graph input."""

    def __init__(self, proto: onnx.ModelProto, source: str,
                 shapes: Mapping[str, Any] | None = None,
                 constants: Mapping[str, Any] | None = None,
                 sequences: Mapping[str, int] | None = None) -> None:
        self.proto = proto
        self.source = source  # file name, for error messages and node locations
        self.opsets = domain_opsets(proto)
        self.opset = _default_opset(proto, source)
        check_supported(proto, self.opset, source, self.opsets)
        check_schemas(proto, self.opset, source)
        graph = proto.graph
        check_single_assignment(graph, source)
        self.initializers = {t.name: _tensor_array(t, source) for t in graph.initializer}
        given = [v for v in graph.input if v.name not in self.initializers]
        # Optional graph inputs bound to None are absent: empty optionals.
        self.absent = {name for name, value in (constants or {}).items() if value is None and
                       any(v.name == name and v.type.HasField("optional_type") for v in given)}
        constants = {k: v for k, v in (constants or {}).items() if k not in self.absent}
        self.sequence_counts = dict(sequences or {})
        declared = [spec for v in given if v.name not in self.absent
                    for spec in _input_specs(v, self.sequence_counts, source)]
        # Graph inputs bound to values: known at import time, like initializers, and no longer
        # arguments of the model.
        self.constants = _bind_constants(constants, declared, source)
        self.inputs = [spec for spec in declared if spec.name not in self.constants]
        self.input_names = [spec.name for spec in self.inputs]
        self.output_names = [v.name for v in graph.output]
        # (name, None) for a tensor output, (name, n) for a sequence of n tensors returned as
        # n outputs; set by each trace
        self.output_layout: list[tuple[str, int | None]] = []
        self.nodes = topological_order(graph, set(self.initializers) | set(self.constants)
                                       | {v.name for v in given}, source)
        self.shapes = _check_shapes(shapes or {}, self.inputs, source)
        self.__name__ = re.sub(r"[^A-Za-z0-9_]", "_", graph.name or "onnx_model") or "onnx_model"
        self.__signature__ = _signature(self.input_names)
        # value -> (op type, inputs) of every node converted so far, function bodies included
        self._made_from: dict[str, tuple[str, list[str]]] = {}
        # the sequences (value -> its tensors' values) and optionals (value -> the value it
        # holds, None when empty) of the trace under way
        self._seq: dict[str, list[str]] = {}
        self._opt: dict[str, str | None] = {}
        self._consts: dict[str, Const] = {}

    def __repr__(self) -> str:
        return (f"OnnxModel({self.source!r}, opset {self.opset}, {len(self.nodes)} nodes, "
                f"inputs {self.input_names})")

    # -- example inputs -----------------------------------------------------------------------

    def input_shape(self, index: int) -> tuple[int, ...]:
        """The static shape of input `index`, symbolic dims pinned by `shapes`."""
        spec = self.inputs[index]
        if spec.name in self.shapes:
            return self.shapes[spec.name]
        if not spec.ranked:
            raise EmberError(f"{self.source}: input {spec.name!r} declares no shape; pin it with "
                             f"shapes={{{spec.name!r}: (...)}}, or pass example inputs")
        dims = []
        for axis, dim in enumerate(spec.dims):
            if isinstance(dim, str):
                if dim not in self.shapes:
                    raise EmberError(
                        f"{self.source}: input {spec.name!r} has a symbolic dimension {axis} "
                        f"({dim!r}); pin it with shapes={{{spec.name!r}: (...)}} or "
                        f"shapes={{{dim!r}: N}}, or pass example inputs")
                dim = self.shapes[dim]
            dims.append(int(dim))
        return _check_size(spec, tuple(dims), self.source)

    @property
    def example_inputs(self) -> tuple[np.ndarray, ...]:
        """Seeded random floats (zeros for integers and bools) of the declared inputs."""
        rng = np.random.default_rng(0)
        arrays = []
        for index, spec in enumerate(self.inputs):
            shape = self.input_shape(index)
            if spec.dtype.is_float:
                arrays.append(rng.standard_normal(shape).astype(spec.dtype.numpy))
            else:
                arrays.append(np.zeros(shape, dtype=spec.dtype.numpy))
        return tuple(arrays)

    # -- sequences and optionals at the boundary ----------------------------------------------

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        """The model's arguments from graph-input values by name: a tensor for a tensor
        input, a list of tensors for a sequence input, the held value for a present optional
        (bound inputs and absent optionals are left out)."""
        optional = {v.name for v in self.proto.graph.input if v.type.HasField("optional_type")}
        flat: dict[str, Any] = {}
        for name, value in values.items():
            if name in self.absent or name in self.constants:
                continue
            key = name + OPTIONAL_VALUE if name in optional else name
            if isinstance(value, (list, tuple)):
                flat.update({_element_name(key, i): v for i, v in enumerate(value)})
            else:
                flat[key] = value
        missing = [name for name in self.input_names if name not in flat]
        if missing:
            raise EmberError(f"{self.source}: no value for input{'s' if len(missing) > 1 else ''}"
                             f" {', '.join(repr(m) for m in missing)}")
        return [flat[name] for name in self.input_names]

    def results(self, outputs: Any) -> list[Any]:
        """The executable's outputs grouped per graph output as the last trace laid them out:
        a tensor, or a list of tensors for a sequence."""
        flat = list(outputs) if isinstance(outputs, tuple) else [outputs]
        grouped, index = [], 0
        for _, count in self.output_layout:
            if count is None:
                grouped.append(flat[index])
                index += 1
            else:
                grouped.append(flat[index:index + count])
                index += count
        return grouped

    # -- running ------------------------------------------------------------------------------

    def __call__(self, *args: Any) -> Any:
        """Trace the graph on `args`; outside a trace, run it with the reference interpreter."""
        if not tracer.tracing():
            from ember.driver import compile as compile_model

            return compile_model(self, *args, opt_level=0)(*args)
        if len(args) != len(self.inputs):
            raise EmberError(f"{self.source}: the model takes {len(self.inputs)} inputs "
                             f"({', '.join(self.input_names)}), got {len(args)}")
        slots: dict[str, Slot] = {
            name: Slot(name, known=array, const_name=name,
                       const=functools.partial(self._const, name, array))
            for name, array in (self.initializers | self.constants).items()
        }
        bound: dict[str, int] = {}
        self._seq, self._opt = {}, {name: None for name in self.absent}
        for spec, arg in zip(self.inputs, args, strict=True):
            tensor = tracer.as_tensor(arg)
            _check_input(spec, tensor, bound, self.source)
            slots[spec.name] = Slot(spec.name, tensor=tensor)
        for value in self.proto.graph.input:
            if value.name in self.absent or value.name in self.initializers:
                continue
            kind = value.type.WhichOneof("value")
            name = value.name
            if kind == "optional_type":
                self._opt[name] = name + OPTIONAL_VALUE
                name += OPTIONAL_VALUE
                kind = value.type.optional_type.elem_type.WhichOneof("value")
            if kind == "sequence_type":
                self._seq[name] = [_element_name(name, i)
                                   for i in range(self.sequence_counts[value.name])]
        for node in self.nodes:
            self._convert(node, slots)
        outputs, self.output_layout = [], []
        for name in self.output_names:
            value = self._value(name)
            if value is None:
                raise EmberError(f"{self.source}: output {name!r} is an empty optional; Ember "
                                 "returns tensors")
            if value in self._seq:
                elements = self._seq[value]
                outputs.extend(slots[e].as_tensor() for e in elements)
                self.output_layout.append((name, len(elements)))
            else:
                outputs.append(slots[value].as_tensor())
                self.output_layout.append((name, None))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _const(self, name: str, array: np.ndarray) -> Const:
        """The IR constant of initializer (or bound input) `name`, made at its first use. An
        initializer's array (read-only, decoded from the file by the loader) is adopted; a
        bound input, the user's array, is copied."""
        made = self._consts.get(name)
        if made is None:
            made = self._consts[name] = Const(array, copy=name in self.constants)
        return made

    def _value(self, name: str) -> str | None:
        """What value `name` holds: itself for a tensor or sequence, an optional's element (None
        when empty)."""
        while name in self._opt:
            inner = self._opt[name]
            if inner is None:
                return None
            name = inner
        return name

    def _convert(self, node: onnx.NodeProto, slots: dict[str, Slot],
                 opset: int | None = None) -> None:
        """Convert one node (at `opset`, the model's by default) into `slots`."""
        opset = node_opset(node, self.opset if opset is None else opset, self.opsets)
        for name in node.output:
            self._made_from[name] = (node.op_type, [*node.input, *control.implicit_inputs(node)])
        if control.is_control_flow(node):
            self._control(node, slots, opset)
            return
        if node.domain in ("", "ai.onnx") and (node.op_type in SEQUENCE_OPS or (
                node.op_type == "Identity" and self._is_container(node.input[0]))):
            self._sequence_op(node, slots, opset)
            return
        for name in node.input:
            if name and self._is_container(name):
                what = "an optional" if name in self._opt else "a sequence"
                raise EmberError(f"{self.source}: {node.op_type} {node.name!r} reads {name!r}, "
                                 f"{what}; it takes tensors")
        converter = CONVERTERS.get(_op_key(node))
        if converter is None or not converter.supports(opset):
            self._expand(node, slots, opset)
            return
        inputs = [slots[name] if name else None for name in node.input]
        try:
            context = NodeContext(node, opset, inputs)
        except EmberError as err:
            raise EmberError(f"{self.source}: {err}") from None
        given = [s for s in inputs if s is not None]
        foldable = bool(given) and all(s.known is not None for s in given) and sum(
            s.known.size for s in given if s.known is not None) <= FOLD_LIMIT
        try:
            outputs = self._fold(context) if foldable else None
            if outputs is None:
                outputs = self._emit(context)
        except ByFunction:
            self._expand(node, slots, opset)
            return
        except EmberError as err:
            shapes = ", ".join(_describe(s) for s in inputs)
            raise _same_kind(err, f"{self.source}: cannot convert {context.label} (inputs: "
                             f"{shapes or 'none'}): {self._advice(err)}") from err
        except (ArithmeticError, IndexError, KeyError, TypeError, ValueError) as err:
            # A converter meeting a node the schema check let through (an attribute value
            # out of range, inputs of the wrong rank): still a malformed node of the model.
            shapes = ", ".join(_describe(s) for s in inputs)
            raise EmberError(f"{self.source}: cannot convert {context.label} (inputs: "
                             f"{shapes or 'none'}): {type(err).__name__}: {err}") from err
        for index, name in enumerate(node.output):
            if not name:
                continue
            if index >= len(outputs) or outputs[index] is None:
                raise EmberError(f"{self.source}: {context.label}: output {index} ({name!r}) "
                                 "is not supported")
            value = outputs[index]
            if isinstance(value, Tensor):
                slots[name] = Slot(name, tensor=value)
            else:
                slots[name] = Slot(name, known=np.asarray(value))

    # -- control flow ---------------------------------------------------------------------------

    def _control(self, node: onnx.NodeProto, slots: dict[str, Slot], opset: int) -> None:
        """Convert an If, Loop or Scan by resolving it at import time (see ember.onnx.control)."""
        label = f"{node.op_type} {node.name!r}" if node.name else node.op_type
        if not control.supports(node, opset):
            versions = ", ".join(str(v) for v in control.VERSIONS[node.op_type])
            raise UnsupportedError(f"{self.source}: 1 unsupported ONNX operator at opset "
                                   f"{opset}: {label} (Ember unrolls versions {versions})")
        convert = {"If": self._if, "Loop": self._loop, "Scan": self._scan}[node.op_type]
        try:
            convert(node, label, slots, opset)
        except (KeyError, ValueError, IndexError) as err:  # a malformed node or body
            raise EmberError(f"{self.source}: cannot convert {label}: {type(err).__name__}: "
                             f"{err}") from err

    def _run(self, nodes: Sequence[onnx.NodeProto], slots: dict[str, Slot], opset: int) -> None:
        for inner in nodes:
            at = control.HELPER_OPSET if inner.name.endswith(control.HELPER_MARK) else opset
            self._convert(inner, slots, at)

    def _alias(self, slots: dict[str, Slot], output: str, name: str) -> None:
        """Output `output` of a control-flow or sequence node is the value `name` (a tensor, a
        sequence or an optional)."""
        if not output:
            return
        if name in self._opt:
            self._opt[output] = self._opt[name]
        elif name in self._seq:
            self._seq[output] = list(self._seq[name])
        else:
            slot = slots[name]
            slots[output] = Slot(output, tensor=slot.tensor, known=slot.known)

    def _is_container(self, name: str) -> bool:
        return name in self._seq or name in self._opt

    # -- sequences and optionals ------------------------------------------------------------------

    def _sequence_op(self, node: onnx.NodeProto, slots: dict[str, Slot], opset: int) -> None:
        """Sequences are lists of tensors known at import time (their lengths are static),
        optionals a tensor, a sequence or nothing: their operators rearrange those lists."""
        label = f"{node.op_type} {node.name!r}" if node.name else node.op_type
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        given = [name for name in node.input]
        out = node.output[0] if node.output else ""
        op = node.op_type

        def sequence(index: int) -> list[str]:
            name = self._value(given[index]) if index < len(given) and given[index] else None
            if name is None or name not in self._seq:
                raise EmberError(f"{self.source}: {label}: input {index} must be a sequence")
            return self._seq[name]

        def position(index: int, count: int, default: int, insert: bool = False) -> int:
            if index >= len(given) or not given[index]:
                return default
            known = slots[given[index]].known
            if known is None:
                raise self._needs(f"{label}: input {index} (position) must be known at import "
                                  "time; Ember sequences have static lengths", given[index])
            at = int(known.reshape(-1)[0])
            high = count if insert else count - 1
            if not -count <= at <= high:
                raise EmberError(f"{self.source}: {label}: position {at} is out of range for a "
                                 f"sequence of {count}")
            return at + count if at < 0 else at

        if op == "Identity":
            self._alias(slots, out, given[0])
        elif op == "SequenceEmpty":
            self._seq[out] = []
        elif op == "SequenceConstruct":
            self._seq[out] = list(given)
        elif op == "SequenceLength":
            slots[out] = Slot(out, known=np.array(len(sequence(0)), np.int64))
        elif op == "SequenceAt":
            items = sequence(0)
            self._alias(slots, out, items[position(1, len(items), 0)] if items else "")
        elif op == "SequenceInsert":
            items = list(sequence(0))
            items.insert(position(2, len(items), len(items), insert=True), given[1])
            self._seq[out] = items
        elif op == "SequenceErase":
            items = list(sequence(0))
            if not items:
                raise EmberError(f"{self.source}: {label}: erasing from an empty sequence")
            del items[position(1, len(items), len(items) - 1)]
            self._seq[out] = items
        elif op == "ConcatFromSequence":
            self._concat_from_sequence(node, label, sequence(0), attrs, slots)
        elif op == "SplitToSequence":
            self._split_to_sequence(node, label, given, attrs, slots)
        elif op == "SequenceMap":
            self._sequence_map(node, label, given, attrs, slots, opset)
        elif op == "Optional":
            self._opt[out] = given[0] if given and given[0] else None
        elif op == "OptionalHasElement":
            present = bool(given and given[0]) and (
                given[0] not in self._opt or self._value(given[0]) is not None)
            slots[out] = Slot(out, known=np.array(present))
        elif op == "OptionalGetElement":
            if given[0] not in self._opt:
                self._alias(slots, out, given[0])  # a tensor or sequence is its own element
            elif self._value(given[0]) is None:
                raise EmberError(f"{self.source}: {label}: the optional {given[0]!r} is empty")
            else:
                self._alias(slots, out, self._opt[given[0]])

    def _concat_from_sequence(self, node: onnx.NodeProto, label: str, items: list[str],
                              attrs: dict[str, Any], slots: dict[str, Slot]) -> None:
        if not items:
            raise EmberError(f"{self.source}: {label}: the sequence is empty")
        axis, new_axis = int(attrs["axis"]), int(attrs.get("new_axis", 0))
        prefix = control.fresh_prefix(node)
        if new_axis:
            nodes = control.stacked(items, axis, node.output[0], prefix)
        else:
            nodes = [control.helper_node("Concat", items, [node.output[0]], axis=axis)]
        self._run(nodes, slots, control.HELPER_OPSET)

    def _split_to_sequence(self, node: onnx.NodeProto, label: str, given: list[str],
                           attrs: dict[str, Any], slots: dict[str, Slot]) -> None:
        shape = self._type_of(slots[given[0]])[1]
        axis = int(attrs.get("axis", 0))
        if not -len(shape) <= axis < len(shape):
            raise EmberError(f"{self.source}: {label}: axis {axis} is out of range for shape "
                             f"{list(shape)}")
        axis %= len(shape)
        size = shape[axis]
        squeeze = False
        if len(given) > 1 and given[1]:
            known = slots[given[1]].known
            if known is None:
                raise self._needs(f"{label}: input 1 (split) must be known at import time; "
                                  "Ember sequences have static lengths", given[1])
            if known.ndim == 0:
                step = int(known)
                if step <= 0:
                    raise EmberError(f"{self.source}: {label}: split {step} must be positive")
                sizes = [min(step, size - start) for start in range(0, size, step)]
            else:
                sizes = [int(v) for v in known.reshape(-1)]
                if any(v < 0 for v in sizes) or sum(sizes) != size:
                    raise EmberError(f"{self.source}: {label}: split {sizes} does not sum to "
                                     f"the axis size {size}")
        else:
            sizes, squeeze = [1] * size, not int(attrs.get("keepdims", 1))
        prefix = control.fresh_prefix(node)
        nodes, items, start = [], [], 0
        axes = prefix + "axes"
        nodes.append(control.constant(axes, np.array([axis], np.int64)))
        for index, count in enumerate(sizes):
            bounds = [prefix + f"start{index}", prefix + f"end{index}"]
            nodes.append(control.constant(bounds[0], np.array([start], np.int64)))
            nodes.append(control.constant(bounds[1], np.array([start + count], np.int64)))
            piece = prefix + f"piece{index}"
            nodes.append(control.helper_node("Slice", [given[0], *bounds, axes], [piece]))
            if squeeze:
                nodes.append(control.helper_node("Squeeze", [piece, axes], [piece + "/1"]))
                piece += "/1"
            items.append(piece)
            start += count
        self._run(nodes, slots, control.HELPER_OPSET)
        self._seq[node.output[0]] = items

    def _sequence_map(self, node: onnx.NodeProto, label: str, given: list[str],
                      attrs: dict[str, Any], slots: dict[str, Slot], opset: int) -> None:
        body = attrs["body"]
        lengths = {len(self._seq[self._value(n)]) for n in given
                   if n and self._value(n) in self._seq}
        if len(lengths) != 1:
            raise EmberError(f"{self.source}: {label}: the input sequences have lengths "
                             f"{sorted(lengths)}; they must agree")
        count = lengths.pop()
        collected: list[list[str]] = [[] for _ in body.output]
        for index in range(count):
            bound = {}
            for formal, name in zip(body.input, given, strict=False):
                value = self._value(name)
                bound[formal.name] = self._seq[value][index] if value in self._seq else name
            nodes, outputs = control.inline(body, control.fresh_prefix(node), bound)
            self._run(nodes, slots, opset)
            for slot, name in zip(collected, outputs, strict=True):
                slot.append(name)
        for output, items in zip(node.output, collected, strict=False):
            if output:
                self._seq[output] = items

    def _needs(self, message: str, name: str) -> NeedsKnownValue:
        """A NeedsKnownValue for value `name`, saying which graph inputs to bind."""
        err = NeedsKnownValue(message, name)
        return NeedsKnownValue(f"{self.source}: {self._advice(err)}", name)

    def _known_flag(self, slots: dict[str, Slot], name: str, label: str, what: str) -> bool:
        known = slots[name].known
        if known is None:
            raise self._needs(f"{label}: {what} must be known at import time to resolve the "
                              "control flow; Ember graphs are static", name)
        if known.size != 1:
            raise EmberError(f"{self.source}: {label}: {what} has {known.size} elements; it "
                             "takes one")
        return bool(known.reshape(-1)[0])

    def _if(self, node: onnx.NodeProto, label: str, slots: dict[str, Slot], opset: int) -> None:
        branches = {a.name: a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH}
        cond = node.input[0]
        prefix = control.fresh_prefix(node)
        if slots[cond].known is not None:
            taken = "then_branch" if self._known_flag(slots, cond, label, "the condition") \
                else "else_branch"
            nodes, outputs = control.inline(branches[taken], prefix, {})
            self._run(nodes, slots, opset)
            self._check_count(label, outputs, node)
            for output, name in zip(node.output, outputs, strict=False):
                self._alias(slots, output, name)
            return
        # A condition computed at run time: both branches, then Where picks each output (of
        # tensors only: a sequence or optional chosen at run time has no static layout).
        if any(_yields_container(branches[b]) for b in ("then_branch", "else_branch")):
            raise self._needs(f"{label}: the condition must be known at import time when the "
                              "branches give sequences or optionals", cond)
        results = []
        for taken in ("then_branch", "else_branch"):
            nodes, outputs = control.inline(branches[taken], prefix + taken + "/", {})
            self._run(nodes, slots, opset)
            self._check_count(label, outputs, node)
            results.append(outputs)
        for output, then, other in zip(node.output, *results, strict=False):
            if not output:
                continue
            a, b = (_describe(slots[n]) for n in (then, other))
            if self._type_of(slots[then]) != self._type_of(slots[other]):
                raise EmberError(f"{self.source}: {label}: with a condition computed at run time "
                                 f"both branches must give one static type, got {a} and {b}")
            self._run([control.helper_node("Where", [cond, then, other], [output])], slots, opset)

    @staticmethod
    def _type_of(slot: Slot) -> tuple[Any, tuple[int, ...]]:
        if slot.known is not None:
            return slot.known.dtype, tuple(slot.known.shape)
        tensor = slot.as_tensor()
        return np.dtype(tensor.dtype), tuple(tensor.shape)

    def _check_count(self, label: str, outputs: Sequence[str], node: onnx.NodeProto) -> None:
        if len(outputs) < len(node.output):
            raise EmberError(f"{self.source}: {label} has {len(node.output)} outputs; its body "
                             f"gives {len(outputs)}")

    def _loop(self, node: onnx.NodeProto, label: str, slots: dict[str, Slot], opset: int
              ) -> None:
        body = next(a.g for a in node.attribute if a.name == "body")
        trip_name = node.input[0] if len(node.input) > 0 else ""
        cond_name = node.input[1] if len(node.input) > 1 else ""
        carried = list(node.input[2:])
        count = len(carried)
        scans = len(body.output) - 1 - count
        if len(body.input) != 2 + count or scans < 0:
            raise EmberError(f"{self.source}: {label}: a body of {len(body.input)} inputs and "
                             f"{len(body.output)} outputs for {count} loop-carried values")
        trip = None
        if trip_name:
            known = slots[trip_name].known
            if known is None:
                raise self._needs(f"{label}: input 0 (M, the trip count) must be known at "
                                  "import time to unroll the loop; Ember graphs are static",
                                  trip_name)
            trip = int(known.reshape(-1)[0])
        going = self._known_flag(slots, cond_name, label, "input 1 (cond)") if cond_name \
            else True
        if trip is None and not cond_name:
            raise EmberError(f"{self.source}: {label} has neither a trip count nor a condition: "
                             "it never ends")
        iteration, collected = 0, [[] for _ in range(scans)]
        while going and (trip is None or iteration < trip):
            if iteration >= control.UNROLL_LIMIT:
                raise UnsupportedError(f"{self.source}: {label} runs over {control.UNROLL_LIMIT} "
                                       "iterations; Ember unrolls loops at import time")
            prefix = control.fresh_prefix(node)
            helpers = [control.constant(prefix + "iteration", np.array(iteration, np.int64)),
                       control.constant(prefix + "condition", np.array(True))]
            bound = {body.input[0].name: prefix + "iteration",
                     body.input[1].name: prefix + "condition"}
            bound |= {formal.name: name for formal, name in zip(body.input[2:], carried,
                                                                   strict=True)}
            nodes, outputs = control.inline(body, prefix, bound)
            self._run([*helpers, *nodes], slots, opset)
            carried = outputs[1:1 + count]
            for index in range(scans):
                collected[index].append(outputs[1 + count + index])
            if cond_name:
                going = self._known_flag(slots, outputs[0], label, "the body's condition")
            iteration += 1
        for output, name in zip(node.output, carried, strict=False):
            self._alias(slots, output, name)
        self._stack_outputs(node, label, node.output[count:], collected, [0] * scans,
                            slots, opset)

    def _scan(self, node: onnx.NodeProto, label: str, slots: dict[str, Slot], opset: int
              ) -> None:
        body = next(a.g for a in node.attribute if a.name == "body")
        plan = control.ScanPlan.of(node, body)
        states = list(node.input[:plan.states])
        inputs = list(node.input[plan.states:])
        if len(body.input) != len(node.input):
            raise EmberError(f"{self.source}: {label}: a body of {len(body.input)} inputs for "
                             f"{len(node.input)} inputs")
        lengths = set()
        for name, axis in zip(inputs, plan.scan_axes, strict=True):
            shape = self._type_of(slots[name])[1]
            if not -len(shape) <= axis < len(shape):
                raise EmberError(f"{self.source}: {label}: scan axis {axis} of input {name!r} "
                                 f"of shape {list(shape)}")
            lengths.add(shape[axis])
        if len(lengths) > 1:
            raise EmberError(f"{self.source}: {label}: the scan inputs have lengths "
                             f"{sorted(lengths)} along their scan axes; they must agree")
        length = lengths.pop() if lengths else 0
        if length > control.UNROLL_LIMIT:
            raise UnsupportedError(f"{self.source}: {label} scans {length} steps, over the "
                                   f"{control.UNROLL_LIMIT} Ember unrolls at import time")
        outputs_count = len(body.output) - plan.states
        collected = [[] for _ in range(outputs_count)]
        for step in range(length):
            prefix = control.fresh_prefix(node)
            helpers, sliced = control.scan_slices(inputs, plan, step, length, prefix)
            bound = {formal.name: name for formal, name in zip(body.input, [*states, *sliced],
                                                                  strict=True)}
            nodes, outputs = control.inline(body, prefix, bound)
            self._run([*helpers, *nodes], slots, opset)
            states = outputs[:plan.states]
            for index in range(outputs_count):
                collected[index].append(outputs[plan.states + index])
        for output, name in zip(node.output, states, strict=False):
            self._alias(slots, output, name)
        for index, reverse in enumerate(plan.output_reverse):
            if reverse:
                collected[index].reverse()
        self._stack_outputs(node, label, node.output[plan.states:], collected,
                            list(plan.output_axes), slots, opset)

    def _stack_outputs(self, node: onnx.NodeProto, label: str, outputs: Sequence[str],
                       collected: list[list[str]], axes: list[int], slots: dict[str, Slot],
                       opset: int) -> None:
        """Each scan output: the iterations' values stacked along a new axis."""
        for output, names, axis in zip(outputs, collected, axes, strict=False):
            if not output:
                continue
            if not names:
                raise EmberError(f"{self.source}: {label} runs no iteration, so its scan "
                                 f"output {output!r} has no static shape")
            prefix = control.fresh_prefix(node)
            self._run(control.stacked(names, axis, output, prefix), slots, opset)

    def _expand(self, node: onnx.NodeProto, slots: dict[str, Slot], opset: int) -> None:
        """Convert `node` through its ONNX function body (see `ember.onnx.functions`)."""
        label = f"{node.op_type} {node.name!r}" if node.name else node.op_type
        if not functions.has_function(node, opset):
            raise UnsupportedError(f"{self.source}: 1 unsupported ONNX operator at opset "
                                   f"{opset}: {_unsupported_key(node, opset)}")
        types = [_type_proto(slots[name]) if name else None for name in node.input]
        try:
            body = functions.function_body(node, opset, types)
            # a body of another domain's operator that imports no ONNX opset: the model's
            inner_opset = functions.body_opset(
                body, opset if node.domain in ("", "ai.onnx") else self.opset)
            for inner in functions.expand(node, opset, body):
                self._convert(inner, slots, inner_opset)
        except UnsupportedError as err:
            raise UnsupportedError(f"{label} at opset {opset}, expanded by its ONNX function: "
                                   f"{err}") from None
        except EmberError as err:
            raise _same_kind(err, f"{label} at opset {opset}, expanded by its ONNX function: "
                             f"{err}") from None

    def inputs_behind(self, value: str) -> list[str]:
        """The graph inputs whose values `value` is computed from, in input order: what to
        bind with `constants=` for it to be known at import time. Shape and Size read only
        static shapes, so the inputs behind them do not count."""
        producers = {out: (node.op_type, list(node.input)) for node in self.nodes
                     for out in node.output if out}
        producers |= self._made_from  # the nodes of expanded function bodies, once traced
        found, stack, seen = set(), [value], set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in self.input_names:
                found.add(name)
            op_type, inputs = producers.get(name, ("", []))
            if op_type not in ("Shape", "Size"):
                stack.extend(i for i in inputs if i)
        return [name for name in self.input_names if name in found]

    def _advice(self, err: EmberError) -> str:
        """`err`'s message, with how to bind the value when it comes from graph inputs."""
        if not isinstance(err, NeedsKnownValue):
            return str(err)
        behind = self.inputs_behind(err.value_name)
        if not behind:
            return str(err)
        names = ", ".join(f"{name!r}: value" for name in behind)
        what = (f"it is graph input {behind[0]!r}" if behind == [err.value_name]
                else f"it is computed from graph input{'s' if len(behind) > 1 else ''} "
                     f"{', '.join(repr(n) for n in behind)}")
        return f"{err} ({what}: bind with ember.onnx.load(..., constants={{{names}}}))"

    def _emit(self, context: NodeContext) -> Sequence[Any]:
        """Run the converter in the model's trace; its nodes carry the ONNX node as location."""
        builder = tracer.current().builder
        start = len(builder.nodes)
        outputs = CONVERTERS[_op_key(context.node)].convert(context)
        location = f"{os.path.basename(self.source)}:{context.node.name or context.op_type}"
        for index in range(start, len(builder.nodes)):
            builder.nodes[index] = builder.nodes[index].replace(loc=location)
            for value in builder.nodes[index].outputs:
                size = shape_bytes(value.type.shape, value.type.dtype.numpy)
                if size > TENSOR_BYTES:
                    raise context.error(
                        f"makes a {value.type} tensor of {format_bytes(size)}, beyond the "
                        f"{format_bytes(TENSOR_BYTES)} one tensor of an imported model may have")
        return outputs

    def _fold(self, context: NodeContext) -> list[Any] | None:
        """Run the converter on known inputs in a scratch trace and evaluate it with numpy;
        None when a value it would compute exceeds FOLD_BYTES (the node stays in the graph)."""
        from ember.interpreter import interpret

        scratch = tracer.TraceContext("fold")
        outer = tracer._STATE.ctx  # NOTE: a nested trace of its own, restored below
        tracer._STATE.ctx = scratch
        try:
            fresh = [None if s is None else Slot(s.name, known=s.known) for s in context.slots]
            outputs = list(CONVERTERS[_op_key(context.node)].convert(
                NodeContext(context.node, context.opset, fresh)))
            traced = [o for o in outputs if isinstance(o, Tensor)]
            if any(shape_bytes(v.type.shape, v.type.dtype.numpy) > FOLD_BYTES
                   for node in scratch.builder.nodes for v in node.outputs):
                return None
            values = iter(interpret(scratch.builder.build(t.value for t in traced)))
        finally:
            tracer._STATE.ctx = outer
        return [next(values) if isinstance(o, Tensor) else o for o in outputs]


# ---------------------------------------------------------------------------------------------
# Reading and checking the model.


def load(path_or_model: str | os.PathLike[str] | bytes | onnx.ModelProto,
         shapes: Mapping[str, Any] | None = None,
         constants: Mapping[str, Any] | None = None,
         sequences: Mapping[str, int] | None = None) -> OnnxModel:
    """Import an ONNX model (a path, serialized bytes or a ModelProto).

    `shapes` pins symbolic dimensions: `{"input": (1, 3, 224, 224)}` gives an input's whole
    shape, `{"batch": 1}` one named dimension. `constants` binds graph inputs to values known
    at import time (`{"shape": np.array([2, 3])}`): a graph input that sets a shape, axes or
    pads must be bound so, since Ember graphs have static shapes; a bound input is no longer an
    argument of the model; None marks an optional graph input absent. `sequences` gives the
    length of each sequence graph input (`{"frames": 3}`): its tensors become that many
    arguments, `model.arguments({...})` lays lists out so, and `model.results(outputs)` groups
    a sequence output's tensors back into a list. Unsupported operators raise one
    UnsupportedError listing them all; a file that is not an ONNX model raises EmberError.
    """
    if isinstance(path_or_model, onnx.ModelProto):
        proto, source = path_or_model, path_or_model.graph.name or "<model>"
    elif isinstance(path_or_model, (bytes, bytearray)):
        proto, source = _parse(bytes(path_or_model), "<bytes>"), "<bytes>"
    else:
        source = os.fspath(path_or_model)
        proto = _parse(_read_file(source), source)
        _load_external_data(proto, source)
    _check_structure(proto, source)
    return OnnxModel(proto, source, shapes, constants, sequences)


def _read_file(source: str) -> bytes:
    """The bytes of a regular file of at most FILE_LIMIT bytes (protobuf parses no more)."""
    try:  # opened without blocking, so a FIFO is reported, not waited on
        with os.fdopen(os.open(source, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            status = os.fstat(handle.fileno())
            if not stat.S_ISREG(status.st_mode):  # (a directory fails to open as a file)
                raise EmberError(f"{source}: cannot read the ONNX file: it is not a regular "
                                 "file")
            if status.st_size > FILE_LIMIT:
                raise EmberError(f"{source}: the ONNX file is larger than 2 GiB, protobuf's "
                                 "limit; save the weights as external data")
            return handle.read(FILE_LIMIT + 1)
    except OSError as err:
        reason = err.strerror or err
        raise EmberError(f"{source}: cannot read the ONNX file: {reason}") from None


def _parse(data: bytes, source: str) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as err:  # protobuf's DecodeError, or a RuntimeWarning turned error
        raise EmberError(f"{source}: not a valid ONNX model (protobuf parse failed: {err})"
                         ) from None
    return proto


def _load_external_data(proto: onnx.ModelProto, source: str) -> None:
    if not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        return
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, os.path.dirname(source))
    except Exception as err:
        raise EmberError(f"{source}: cannot load external tensor data: {err}") from None


def _check_structure(proto: onnx.ModelProto, source: str) -> None:
    """Bytes that happen to parse as protobuf are still not a model without a graph, or with
    names that are not UTF-8 text."""
    if not proto.HasField("graph") or not proto.graph.output or proto.ir_version <= 0:
        raise EmberError(f"{source}: not a valid ONNX model (no graph with outputs, or no IR "
                         "version)")
    field = _binary_string(proto)
    if field:
        raise EmberError(f"{source}: not a valid ONNX model ({field} is not UTF-8 text)")


def _binary_string(message: Any, path: str = "model") -> str:
    """The path of the first string field that protobuf left as bytes (its text is not valid
    UTF-8), or ""."""
    for descriptor, value in message.ListFields():
        where = f"{path}.{descriptor.name}"
        repeated = getattr(descriptor, "is_repeated", None)  # protobuf >= 6; `label` before
        if repeated is None:
            repeated = descriptor.label == descriptor.LABEL_REPEATED
        values = value if repeated else [value]
        if descriptor.type == descriptor.TYPE_STRING:
            if any(isinstance(v, bytes) for v in values):
                return where
        elif descriptor.message_type is not None:
            for index, item in enumerate(values):
                found = _binary_string(item, f"{where}[{index}]" if repeated else where)
                if found:
                    return found
    return ""


def domain_opsets(proto: onnx.ModelProto) -> dict[str, int]:
    """The opset version the model imports for each domain ("" for the default one)."""
    return {("" if entry.domain == "ai.onnx" else entry.domain): int(entry.version)
            for entry in proto.opset_import}


def node_opset(node: onnx.NodeProto, default: int, opsets: Mapping[str, int]) -> int:
    """The opset a node's operator is read at: `default` for the ONNX domain, else the version
    the model imports for the node's domain (0 when it imports none)."""
    if node.domain in ("", "ai.onnx"):
        return default
    return opsets.get(node.domain, 0)


def _default_opset(proto: onnx.ModelProto, source: str) -> int:
    """The default domain's opset; a model of other domains only (ai.onnx.preview.training's
    optimizers) reads as the newest, which none of its nodes uses."""
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    if any(node.domain in ("", "ai.onnx") for node in proto.graph.node):
        raise EmberError(f"{source}: the model imports no version of the default ONNX opset")
    return onnx.defs.onnx_opset_version()


def check_supported(proto: onnx.ModelProto, opset: int, source: str = "<model>",
                    opsets: Mapping[str, int] | None = None) -> None:
    """One UnsupportedError naming every unsupported operator and its nodes, or nothing.

    An operator is supported when its converter implements the operator version in effect at
    `opset` (or at the version `opsets` gives the node's domain); an opset newer than the
    installed onnx package knows is refused as a whole.
    """
    opsets = domain_opsets(proto) if opsets is None else opsets
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise UnsupportedError(f"{source}: the model imports opset {opset}, newer than the "
                               f"installed onnx package knows ({newest}); upgrade onnx, or "
                               f"export at opset {newest} or lower")
    missing: dict[str, list[str]] = {}
    for position, node in enumerate(proto.graph.node):
        at = node_opset(node, opset, opsets)
        if control.is_control_flow(node) and control.supports(node, at):
            continue  # resolved at import time; its subgraphs' nodes are checked as converted
        if node.domain in ("", "ai.onnx") and node.op_type in SEQUENCE_OPS:
            continue
        converter = CONVERTERS.get(_op_key(node))
        if converter is not None and converter.supports(at):
            continue
        if functions.has_function(node, at):  # expanded by its ONNX function body
            continue
        key = _unsupported_key(node, at)
        missing.setdefault(key, []).append(repr(node.name) if node.name else f"#{position}")
    if missing:
        listed = "; ".join(f"{op} (node{'s' if len(nodes) > 1 else ''} {', '.join(nodes)})"
                           for op, nodes in sorted(missing.items()))
        raise UnsupportedError(f"{source}: {len(missing)} unsupported ONNX operator"
                               f"{'s' if len(missing) > 1 else ''} at opset {opset}: {listed}")


def _op_key(node: onnx.NodeProto) -> str:
    """The converter registry's key: the op type, prefixed by a domain other than ONNX's."""
    if node.domain not in ("", "ai.onnx"):
        return f"{node.domain}.{node.op_type}"
    return node.op_type


def _unsupported_key(node: onnx.NodeProto, opset: int) -> str:
    if control.is_control_flow(node):
        versions = ", ".join(str(v) for v in control.VERSIONS[node.op_type])
        return f"{node.op_type} at opset {opset} (Ember unrolls versions {versions})"
    converter = CONVERTERS.get(_op_key(node))
    return _op_key(node) if converter is None else converter.refusal(opset)


def _type_proto(slot: Slot) -> onnx.TypeProto:
    """The ONNX tensor type of a value (for building context-dependent function bodies)."""
    if slot.known is not None:
        dtype, shape = slot.known.dtype, slot.known.shape
    else:
        tensor = slot.as_tensor()
        dtype, shape = tensor.dtype, tensor.shape
    elem_type = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    return onnx.helper.make_tensor_type_proto(elem_type, list(shape))


def check_schemas(proto: onnx.ModelProto, opset: int, source: str = "<model>") -> None:
    """Each node of the default domain fits its operator's ONNX schema at `opset`: known
    attributes of the declared types, the required ones present, and input and output counts
    in range; else an EmberError naming the node."""
    for position, node in enumerate(proto.graph.node):
        if node.domain not in ("", "ai.onnx"):
            continue
        label = f"{node.op_type} {node.name!r}" if node.name else f"{node.op_type} #{position}"
        try:
            schema = onnx.defs.get_schema(node.op_type, opset, "")
        except onnx.defs.SchemaError:
            raise UnsupportedError(f"{source}: {label}: ONNX has no {node.op_type} at opset "
                                   f"{opset}") from None
        expected = schema.attributes
        given = set()
        for attribute in node.attribute:
            if attribute.name in given:
                raise EmberError(f"{source}: {label}: attribute {attribute.name!r} is given twice")
            given.add(attribute.name)
            if attribute.name not in expected:
                known = ", ".join(sorted(expected)) or "none"
                raise EmberError(f"{source}: {label}: unknown attribute {attribute.name!r} "
                                 f"(known: {known})")
            want = expected[attribute.name].type
            if int(attribute.type) != int(want):
                kinds = onnx.AttributeProto.AttributeType
                got = (kinds.Name(attribute.type) if attribute.type in kinds.values()
                       else f"of unknown type {attribute.type}")
                raise EmberError(f"{source}: {label}: attribute {attribute.name!r} is {got}, "
                                 f"the schema says {want.name}")
        missing = [name for name, a in expected.items() if a.required and name not in given]
        if missing:
            raise EmberError(f"{source}: {label}: required attribute"
                             f"{'s' if len(missing) > 1 else ''} {', '.join(missing)} missing")
        for what, count, low, high in (
                ("inputs", len(node.input), schema.min_input, schema.max_input),
                ("outputs", len(node.output), schema.min_output, schema.max_output)):
            if not low <= count <= high:
                bound = f"{low}" if low == high else f"{low} to {high}"
                if high >= 2**30:
                    bound = f"at least {low}"
                raise EmberError(f"{source}: {label} has {count} {what}; the schema takes "
                                 f"{bound}")


def check_single_assignment(graph: onnx.GraphProto, source: str = "<model>") -> None:
    """Every value name is defined once: by one output of one node, a graph input or an
    initializer (an initializer may also be listed as an input). Empty output names mark
    unused optional outputs and define nothing."""
    defined: dict[str, str] = {}
    for tensor in graph.initializer:
        if tensor.name in defined:
            raise EmberError(f"{source}: initializer {tensor.name!r} is given twice")
        defined[tensor.name] = f"initializer {tensor.name!r}"
    inputs: set[str] = set()
    for value in graph.input:
        if value.name in inputs:
            raise EmberError(f"{source}: graph input {value.name!r} is declared twice")
        inputs.add(value.name)
        defined.setdefault(value.name, f"graph input {value.name!r}")
    for position, node in enumerate(graph.node):
        label = f"node {node.name!r} ({node.op_type})" if node.name else (
            f"node #{position} ({node.op_type})")
        for name in node.output:
            if not name:
                continue
            if name in defined:
                raise EmberError(f"{source}: value {name!r} is written by {label} and by "
                                 f"{defined[name]}; ONNX values are assigned once")
            defined[name] = label


def topological_order(graph: onnx.GraphProto, available: set[str], source: str
                      ) -> list[onnx.NodeProto]:
    """The nodes ordered so each runs after the producers of its inputs (the outer values its
    subgraphs read count as inputs)."""
    producers = {name: node for node in graph.node for name in node.output if name}
    ordered: list[onnx.NodeProto] = []
    done: set[int] = set()
    ready = set(available)
    pending = list(graph.node)
    reads = {id(node): [*node.input, *control.implicit_inputs(node)] for node in pending}
    while pending:
        waiting = []
        for node in pending:
            if all(not name or name in ready for name in reads[id(node)]):
                ordered.append(node)
                done.add(id(node))
                ready.update(name for name in node.output if name)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            node = waiting[0]
            absent = [n for n in reads[id(node)] if n and n not in ready and n not in producers]
            what = (f"reads undefined values {absent}" if absent
                    else "is part of a cycle")
            raise EmberError(f"{source}: node {node.name or node.op_type!r} {what}")
        pending = waiting
    for name in (v.name for v in graph.output):
        if name not in ready:
            raise EmberError(f"{source}: graph output {name!r} is not computed by any node")
    return ordered


def _tensor_array(tensor: onnx.TensorProto, source: str) -> np.ndarray:
    """The initializer's data, read-only (its IR constant adopts it without a copy)."""
    try:
        array = numpy_helper.to_array(tensor)
    except Exception as err:
        raise EmberError(f"{source}: cannot read initializer {tensor.name!r}: {err}") from None
    array.flags.writeable = False
    return array


def _same_kind(err: EmberError, message: str) -> EmberError:
    """An error of `err`'s kind with a new message (a NeedsKnownValue keeps its value name)."""
    if isinstance(err, NeedsKnownValue):
        return NeedsKnownValue(message, err.value_name)
    if isinstance(err, UnsupportedError):
        return UnsupportedError(message)
    return EmberError(message)


def _bind_constants(constants: Mapping[str, Any], declared: list[InputSpec], source: str
                    ) -> dict[str, np.ndarray]:
    """`constants` checked against the graph inputs they bind: each names a graph input that
    is not an initializer, and its value has the input's element type and declared shape."""
    specs = {spec.name: spec for spec in declared}
    bound = {}
    for name, value in constants.items():
        spec = specs.get(name)
        if spec is None:
            raise EmberError(f"{source}: constants names {name!r}, which is not a graph input "
                             f"of the model (inputs: {', '.join(specs) or 'none'})")
        array = np.array(value)  # a copy: the caller's array is never held or changed
        if array.dtype != spec.dtype.numpy:
            raise EmberError(f"{source}: constants[{name!r}] is {array.dtype}; the graph input "
                             f"is {spec.dtype.value}")
        if spec.ranked and (len(spec.dims) != array.ndim or any(
                isinstance(dim, int) and dim != size
                for dim, size in zip(spec.dims, array.shape, strict=True))):
            raise EmberError(f"{source}: constants[{name!r}] has shape {list(array.shape)}; the "
                             f"graph input is declared {_format_dims(spec.dims)}")
        array.flags.writeable = False
        bound[name] = array
    return bound


def _yields_container(graph: onnx.GraphProto) -> bool:
    """Whether a branch declares a sequence or optional output."""
    return any(v.type.WhichOneof("value") in ("sequence_type", "optional_type")
               for v in graph.output)


def _element_name(name: str, index: int) -> str:
    """The model argument holding element `index` of sequence graph input `name`."""
    return f"{name}[{index}]"


def _input_specs(value: onnx.ValueInfoProto, sequences: Mapping[str, int], source: str
                 ) -> list[InputSpec]:
    """The tensor arguments of one graph input: itself, the n tensors of a sequence of length
    `sequences[name]`, or the tensor (or sequence) held by a present optional."""
    name, type_proto, container = value.name, value.type, ""
    if type_proto.HasField("optional_type"):
        container, name = name, name + OPTIONAL_VALUE
        type_proto = type_proto.optional_type.elem_type
    if type_proto.HasField("sequence_type"):
        if value.name not in sequences:
            raise EmberError(f"{source}: input {value.name!r} is a sequence of tensors: give its "
                             f"length with ember.onnx.load(..., sequences={{{value.name!r}: n}})")
        count = int(sequences[value.name])
        element = onnx.ValueInfoProto()
        element.type.CopyFrom(type_proto.sequence_type.elem_type)
        specs = []
        for index in range(count):
            element.name = _element_name(name, index)
            spec = _input_spec(element, source)
            # each tensor of a sequence has its own sizes for the element type's symbolic dims
            dims = tuple(f"{d}@{index}" if isinstance(d, str) else d for d in spec.dims)
            specs.append(InputSpec(spec.name, spec.dtype, dims, name, "sequence", spec.ranked))
        return specs
    element = onnx.ValueInfoProto()
    element.name = name
    element.type.CopyFrom(type_proto)
    spec = _input_spec(element, source)
    return [InputSpec(spec.name, spec.dtype, spec.dims, container, "optional", spec.ranked)
            if container else spec]


def _input_spec(value: onnx.ValueInfoProto, source: str) -> InputSpec:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise UnsupportedError(f"{source}: input {value.name!r} is a {kind}, not a tensor")
    tensor_type = value.type.tensor_type
    dtype = onnx_dtype(tensor_type.elem_type, f"{source}: input {value.name!r}")
    dims: list[Dim] = []
    for axis, dim in enumerate(tensor_type.shape.dim):
        if dim.HasField("dim_value"):
            if dim.dim_value < 0:
                raise EmberError(f"{source}: input {value.name!r} dimension {axis} is "
                                 f"{dim.dim_value}; dimensions are non-negative")
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or f"{value.name}_dim{axis}")
    spec = InputSpec(value.name, dtype, tuple(dims), ranked=tensor_type.HasField("shape"))
    if spec.ranked and all(isinstance(d, int) for d in dims):
        _check_size(spec, tuple(dims), source)
    return spec


def _check_shapes(shapes: Mapping[str, Any], inputs: list[InputSpec], source: str
                  ) -> dict[str, Any]:
    """`shapes` validated: input names map to whole shapes, dimension names to sizes."""
    by_name = {spec.name: spec for spec in inputs}
    dim_names = {d for spec in inputs for d in spec.dims if isinstance(d, str)}
    result: dict[str, Any] = {}
    for key, given in shapes.items():
        if key in by_name:
            shape = _sizes(key, given, source)
            spec = by_name[key]
            if spec.ranked and (len(shape) != len(spec.dims) or any(
                isinstance(d, int) and d != s for d, s in zip(spec.dims, shape, strict=True)
            )):
                raise EmberError(f"{source}: shapes[{key!r}] = {list(shape)} does not fit the "
                                 f"declared shape {_format_dims(spec.dims)}")
            result[key] = shape
        elif key in dim_names:  # a size, or a one-element shape (`--shape batch=4`)
            sizes = _sizes(key, given if isinstance(given, (tuple, list)) else (given,), source)
            if len(sizes) != 1:
                raise EmberError(f"{source}: shapes[{key!r}] names a dimension and takes one "
                                 f"size, got {list(sizes)}")
            result[key] = sizes[0]
        else:
            known = ", ".join(repr(n) for n in [*by_name, *sorted(dim_names)])
            raise EmberError(f"{source}: shapes names {key!r}, which is neither an input nor a "
                             f"symbolic dimension (known: {known or 'none'})")
    return result


def _sizes(key: str, given: Any, source: str) -> tuple[int, ...]:
    """`shapes[key]` as non-negative integer sizes, or an EmberError."""
    try:
        sizes = tuple(given)
        if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in sizes):
            raise TypeError
    except TypeError:
        raise EmberError(f"{source}: shapes[{key!r}] = {given!r} is not a tuple of integer "
                         "sizes") from None
    if any(d < 0 for d in sizes):
        raise EmberError(f"{source}: shapes[{key!r}] = {list(sizes)} has a negative size")
    return tuple(int(d) for d in sizes)


def _check_size(spec: InputSpec, shape: tuple[int, ...], source: str) -> tuple[int, ...]:
    """An input's static shape, if it is within TENSOR_BYTES."""
    size = shape_bytes(shape, spec.dtype.numpy)
    if size > TENSOR_BYTES:
        raise EmberError(f"{source}: input {spec.name!r} of shape {list(shape)} is "
                         f"{format_bytes(size)} of {spec.dtype.value}, beyond the "
                         f"{format_bytes(TENSOR_BYTES)} one tensor of an imported model may have")
    return shape


def _check_input(spec: InputSpec, tensor: Tensor, bound: dict[str, int], source: str) -> None:
    """The traced input fits the declaration; symbolic dims take its sizes, consistently."""
    declared = _format_dims(spec.dims) if spec.ranked else " (of any shape)"
    _check_size(spec, tensor.shape, source)
    if tensor.dtype_ is not spec.dtype:
        raise EmberError(f"{source}: input {spec.name!r} is declared {spec.dtype.value}"
                         f"{declared}, got {tensor.value.type}")
    if not spec.ranked:
        return
    if len(tensor.shape) != len(spec.dims):
        raise EmberError(f"{source}: input {spec.name!r} is declared with rank {len(spec.dims)} "
                         f"{declared}, got {tensor.value.type}")
    for axis, (dim, size) in enumerate(zip(spec.dims, tensor.shape, strict=True)):
        if isinstance(dim, int) and dim != size:
            raise EmberError(f"{source}: input {spec.name!r} dimension {axis} is declared "
                             f"{dim}, got {size} ({declared} vs {list(tensor.shape)})")
        if isinstance(dim, str) and bound.setdefault(dim, size) != size:
            raise EmberError(f"{source}: symbolic dimension {dim!r} is {bound[dim]} in one "
                             f"input and {size} in input {spec.name!r}")


def _format_dims(dims: Sequence[Dim]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _describe(slot: Slot | None) -> str:
    if slot is None:
        return "(omitted)"
    if slot.tensor is not None:
        return f"{slot.name!r} {slot.tensor.value.type}"
    assert slot.known is not None
    return f"{slot.name!r} constant {slot.known.dtype}{list(slot.known.shape)}"


def _signature(names: Sequence[str]) -> inspect.Signature:
    """A signature with one parameter per graph input, so traced graphs keep their names."""
    used: set[str] = set()
    parameters = []
    for name in names:
        identifier = re.sub(r"[^A-Za-z0-9_]", "_", name)
        if not identifier or identifier[0].isdigit() or identifier in used:
            identifier = f"input_{identifier}"
        while identifier in used:
            identifier += "_"
        used.add(identifier)
        parameters.append(inspect.Parameter(identifier, inspect.Parameter.POSITIONAL_ONLY))
    return inspect.Signature(parameters)
