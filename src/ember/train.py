"""Training entry points: `ember.grad`, `ember.value_and_grad` and `ember.train_step`.

    dloss = ember.grad(loss_fn, argnums=(0, 1))            # numpy in, numpy out
    step = ember.train_step(model, F.cross_entropy, opt, x, y)
    loss = step(xb, yb)    # forward, backward and the optimizer's update in one native call

A train step is one graph: the model's forward with its parameters and buffers as inputs, the
backward graph of the loss (`ember.autodiff`), and the optimizer's `update` of each parameter
traced after it, with the optimizer's per-step numbers (learning rate, bias corrections) as
run-time scalar inputs. It is optimized and compiled like any graph, once. Each call writes
the new parameters, optimizer state and buffers straight into the arrays that hold them, when
the compiled code allows it (see `_alias_plan`), else copies them there.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ember.autodiff.engine import GradientError, grad_graph
from ember.driver import Executable, _bind_static, _signature, compile_graph, resolve_target
from ember.errors import EmberError
from ember.frontend.tracer import trace_for_training, trace_with_info
from ember.ir.graph import Graph, GraphBuilder, Node, Value
from ember.ir.types import TensorType
from ember.target import Target


def _argnums(argnums: int | Sequence[int]) -> tuple[tuple[int, ...], bool]:
    if isinstance(argnums, (int, np.integer)):
        return (int(argnums),), True
    nums = tuple(int(a) for a in argnums)
    if not nums:
        raise GradientError("argnums is empty: name at least one argument to differentiate")
    return nums, False


def value_and_grad(fn: Callable[..., Any], argnums: int | Sequence[int] = 0, *,
                   opt_level: int = 3, target: str | Target = "cpu",
                   threads: int | None = None) -> Callable[..., Any]:
    """`f(*args) -> (value, gradient)`: `fn`'s result (one float, a loss) and its gradient with
    respect to the arguments `argnums` (an int: one array; a tuple: a tuple of arrays).

    Traced and compiled once per input signature, like `ember.jit`; array arguments are
    traced, others are static. If `fn` returns a tuple, the first entry is differentiated and
    the value is the whole tuple.
    """
    nums, single_num = _argnums(argnums)
    cache: dict[tuple[Any, ...], tuple[Executable, int, bool]] = {}

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        key = _signature(args)
        positions = [i for i, k in enumerate(key) if k[0] == "array"]
        for num in nums:
            if not -len(args) <= num < len(args):
                raise GradientError(f"argnums {num} is out of range for {len(args)} arguments")
            if num % len(args) not in positions:
                raise GradientError(f"argument {num} is a {type(args[num]).__name__}, not an "
                                    "array: only arrays are differentiated")
        arrays = [args[i] for i in positions]
        entry = cache.get(key)
        if entry is None:
            statics = {i: a for i, a in enumerate(args) if i not in positions}
            bound = _bind_static(fn, statics, len(args))
            resolved, count = resolve_target(target, threads, opt_level)
            traced, single, _ = trace_with_info(bound, *arrays)
            wrt = [positions.index(n % len(args)) for n in nums]
            joint = grad_graph(traced, wrt)
            exe = compile_graph(joint, target=resolved, opt_level=opt_level, threads=count)
            entry = cache[key] = (exe, len(traced.outputs), single)
        exe, count, single = entry
        results = exe(*arrays)
        results = results if isinstance(results, tuple) else (results,)
        value = results[0] if single else tuple(results[:count])
        grads = tuple(results[count:])
        return value, grads[0] if single_num else grads

    wrapper.cache = cache  # type: ignore[attr-defined]
    return wrapper


def grad(fn: Callable[..., Any], argnums: int | Sequence[int] = 0, *, opt_level: int = 3,
         target: str | Target = "cpu", threads: int | None = None) -> Callable[..., Any]:
    """`f(*args) -> gradient` of `fn` (a function returning one float) with respect to the
    arguments `argnums`; see `value_and_grad`."""
    both = value_and_grad(fn, argnums, opt_level=opt_level, target=target, threads=threads)

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        return both(*args)[1]

    wrapper.cache = both.cache  # type: ignore[attr-defined]
    return wrapper


# ---------------------------------------------------------------------------------------------
# The compiled train step.


def _target_count(loss_fn: Callable[..., Any]) -> int:
    """How many batch arrays go to `loss_fn` after the model's output (its positional
    parameters beyond the first; 1 when that cannot be told)."""
    try:
        params = list(inspect.signature(loss_fn).parameters.values())
    except (TypeError, ValueError):
        return 1
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.default is p.empty]
    if any(p.kind is p.VAR_POSITIONAL for p in params) or not positional:
        return 1
    return len(positional) - 1


@dataclass
class _Slot:
    """Where one state output of the step goes: `array()` is the array it replaces."""

    name: str
    array: Callable[[], np.ndarray]
    assign: Callable[[np.ndarray], None]


class TrainStep:
    """A compiled training step; see `train_step`."""

    def __init__(self, model: Any, loss_fn: Callable[..., Any], optimizer: Any,
                 *example_batch: Any, targets: int | None = None, opt_level: int = 3,
                 target: str | Target = "cpu", threads: int | None = None,
                 seed: int | None = None, compile: bool = True) -> None:
        if not example_batch:
            raise EmberError("train_step needs an example batch (the model's inputs, then the "
                             "loss's targets)")
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        count = _target_count(loss_fn) if targets is None else targets
        if not 0 <= count < len(example_batch):
            raise EmberError(f"train_step: the loss takes {count} target(s) after the model's "
                             f"output, but the batch has {len(example_batch)} arrays")
        self._split = len(example_batch) - count
        self._target, self._threads = resolve_target(target, threads, opt_level)
        self._opt_level = opt_level
        self._example = [np.asarray(x) for x in example_batch]
        from ember.nn import init

        self._rng = np.random.default_rng(
            seed if seed is not None else int(init._RNG.integers(2**63)))
        self.steps = 0
        self.compiles = 0
        self._key: tuple[Any, ...] | None = None
        self.exe: Executable | None = None
        self._build(self._scalar_keys(self._peek_scalars()), compile=compile)

    # -- building -----------------------------------------------------------------------------

    def _peek_scalars(self) -> list[dict[str, float]]:
        """The host numbers the next step will use, without advancing any counter."""
        found = []
        for group in self.optimizer.param_groups:
            params = group["params"]
            state = self.optimizer.state.get(params[0], {}) if params else {}
            fresh = any(name not in state for name in self.optimizer.state_names(group))
            found.append(self.optimizer._scalars(group, state.get("step", 0) + 1, fresh)
                         if params else {})
        return found

    def _scalar_keys(self, scalars: list[dict[str, float]]) -> tuple[Any, ...]:
        return tuple((tuple(sorted(s)), self.optimizer.state_names(g))
                     for s, g in zip(scalars, self.optimizer.param_groups, strict=True))

    def _forward(self, *batch: Any) -> Any:
        return self.loss_fn(self.model(*batch[: self._split]), *batch[self._split :])

    def traced_graph(self) -> Graph:
        """The joint forward-backward-update graph as traced, before any pass."""
        assert self.exe is not None
        return self.exe.traced

    def _build(self, key: tuple[Any, ...], compile: bool = True) -> None:
        start = time.perf_counter()
        traced = trace_for_training(self._forward, self.model, *self._example,
                                    name=_name_of(self.model))
        if traced.result_count != 1:
            raise EmberError(f"train_step: the loss function returned {traced.result_count} "
                             "values; it must return the loss")
        batch = len(self._example)
        index_of = {id(obj): batch + i for i, (_, obj) in enumerate(traced.state)}
        trainable = []  # (group index, Parameter, graph input index)
        for g, group in enumerate(self.optimizer.param_groups):
            for param in group["params"]:
                if id(param) not in index_of:
                    raise EmberError(f"train_step: the optimizer holds {param!r}, which is not "
                                     f"a parameter of the {type(self.model).__name__}")
                trainable.append((g, param, index_of[id(param)]))
        joint = grad_graph(traced.graph, [i for _, _, i in trainable])
        graph, slots = self._with_update(joint, traced, trainable, key)
        if not compile:  # only the graph (`ember ir` on a training file)
            self.exe = Executable(graph, graph, False, 0, self._target)
            return
        self.exe = compile_graph(graph, target=self._target, opt_level=self._opt_level,
                                 passes=_train_pipeline(self._opt_level), threads=self._threads)
        self._trace = traced
        self._trainable = trainable
        self._slots = slots
        self._aliases = _alias_plan(self.exe, len(graph.outputs) - len(slots), len(slots),
                                    self._state_inputs(graph, traced, trainable))
        self._key = key
        self.compiles += 1
        self.exe.timings = {"build": time.perf_counter() - start, **self.exe.timings}

    def _with_update(self, joint: Graph, traced: Any, trainable: list[Any], key: tuple[Any, ...]
                     ) -> tuple[Graph, list[_Slot]]:
        """`joint` with the optimizer's update appended: inputs gain each trainable
        parameter's optimizer state and each group's scalars; outputs become the loss, the new
        buffers, the new parameters and the new optimizer state."""
        from ember.frontend.tensor import Tensor
        from ember.frontend.tracer import _STATE, TraceContext

        optimizer = self.optimizer
        b = GraphBuilder(joint.name)
        b.inputs, b.nodes = list(joint.inputs), list(joint.nodes)
        ctx = TraceContext(joint.name)
        ctx.builder = b
        results = len(joint.outputs) - len(trainable)
        grads = joint.outputs[results:]
        states = []
        for g, param, _ in trainable:
            names = optimizer.state_names(optimizer.param_groups[g])
            values = {n: b.input(TensorType.of(param.data), f"{n}{len(states)}") for n in names}
            states.append(values)
        scalars = []
        for g, (names, _) in enumerate(key):
            dtype = next((p.data.dtype for p in optimizer.param_groups[g]["params"]), np.float32)
            scalars.append({n: b.input(TensorType.of(np.zeros((), dtype)), f"{n}_g{g}")
                            for n in names})
        new_params, new_states = [], []
        _STATE.ctx = ctx
        try:
            for (g, _, index), grad, state in zip(trainable, grads, states, strict=True):
                tensors = {n: Tensor(v, ctx) for n, v in state.items()}
                hyper = {n: Tensor(v, ctx) for n, v in scalars[g].items()}
                new_param, new_state = optimizer.update(
                    Tensor(joint.inputs[index], ctx), Tensor(grad, ctx), tensors, hyper)
                new_params.append(new_param.value)
                new_states.append([new_state[n].value for n in state])
        finally:
            _STATE.ctx = None
        outputs = list(joint.outputs[:results]) + new_params + [v for s in new_states for v in s]
        slots = [_buffer_slot(name, obj) for name, obj in traced.updated]
        slots += [_buffer_slot(_param_name(traced, p), p) for _, p, _ in trainable]
        for (_, param, _), state in zip(trainable, states, strict=True):
            slots += [_state_slot(optimizer, param, n) for n in state]
        return b.build(outputs), slots

    def _state_inputs(self, graph: Graph, traced: Any, trainable: list[Any]) -> list[int | None]:
        """For each state output, the graph input holding the array it replaces."""
        batch = len(self._example)
        position = {name: batch + i for i, (name, _) in enumerate(traced.state)}
        found: list[int | None] = [position.get(name) for name, _ in traced.updated]
        found += [index for _, _, index in trainable]
        first_state = batch + len(traced.state) + traced.dropout_keys
        count = sum(len(self.optimizer.state_names(self.optimizer.param_groups[g]))
                    for g, _, _ in trainable)
        found += list(range(first_state, first_state + count))
        return found

    # -- running -------------------------------------------------------------------------------

    def __call__(self, *batch: Any) -> float:
        if len(batch) != len(self._example):
            raise EmberError(f"the train step takes {len(self._example)} arrays (as its example "
                             f"batch), got {len(batch)}")
        scalars = self.optimizer.begin_step()
        key = self._scalar_keys(scalars)
        if key != self._key:  # an option switched a term of the update on or off
            self._build(key)
        loss = self._run(self._arguments(batch, scalars))
        self.steps += 1
        for module in _modules(self.model):
            counter = getattr(module, "num_batches_tracked", None)
            if module.training and counter is not None and hasattr(counter, "data"):
                counter.data = counter.data + 1
        return loss

    def profile(self, *batch: Any, runs: int = 20) -> Any:
        """Median time of every kernel of the step on this batch (an
        `ember.runtime.profile.Profile`), without updating anything."""
        if self.exe is None or self.exe.native is None:
            raise EmberError("profile needs a compiled step (opt_level >= 1)")
        return self.exe.native.profile(*self._arguments(batch, self._peek_scalars()), runs=runs)

    def _arguments(self, batch: Sequence[Any], scalars: list[dict[str, float]]) -> list[Any]:
        """The graph's inputs: the batch, the module's state, fresh dropout keys, the
        optimizer's state and the per-group scalars."""
        args = list(batch)
        args += [obj.data for _, obj in self._trace.state]
        args += [np.array(k, dtype=np.int32) for k in self._rng.integers(
            -(2**31), 2**31, size=self._trace.dropout_keys)]
        for g, param, _ in self._trainable:
            state = self.optimizer.state.get(param) or self.optimizer.init_state(param)
            args += [state[n] for n in self.optimizer.state_names(self.optimizer.param_groups[g])]
        for g, (names, _) in enumerate(self._key):
            dtype = next((p.data.dtype for p in self.optimizer.param_groups[g]["params"]),
                         np.float32)
            args += [np.array(scalars[g][n], dtype=dtype) for n in names]
        return args

    def _run(self, args: list[Any]) -> float:
        exe = self.exe
        extra = len(exe.graph.outputs) - len(self._slots)
        if exe.native is not None:
            into: list[np.ndarray | None] = [None] * extra
            into += [slot.array() if alias else None
                     for slot, alias in zip(self._slots, self._aliases, strict=True)]
            results = exe.native.run_into(args, into)
        else:
            results = exe._interpreter.run(*args)
        for slot, alias, value in zip(self._slots, self._aliases, results[extra:], strict=True):
            if not alias or exe.native is None:
                slot.assign(value)
        return float(results[0])

    def report(self) -> str:
        """The executable's report, with what the step writes in place and what it keeps
        for the backward pass."""
        assert self.exe is not None
        inplace = sum(self._aliases)
        lines = [self.exe.report(),
                 f"  train step: {len(self._slots)} state arrays ({inplace} updated in place, "
                 f"{len(self._slots) - inplace} copied back)"]
        kept = self.kept_for_backward()
        lines.append(f"  kept for backward: {len(kept)} values, {_kib(self.kept_bytes)} (arena "
                     "values live while the loss is computed, largest first)")
        producer = {v: node for node in self.exe.graph.nodes for v in node.outputs}
        for value in kept[:12]:
            node = producer[value]
            kind = node.attrs.get("kind")
            op = f"{node.op}[{kind}]" if kind is not None else node.op
            lines.append(f"    {_kib(value.type.nbytes):>12}  {op} -> {value.type}"
                         f"{'  ' + node.loc if node.loc else ''}")
        if len(kept) > 12:
            lines.append(f"    ... and {len(kept) - 12} smaller")
        again = self.recomputed()
        lines.append(f"  recomputed in the backward pass instead of kept: {len(again)} values, "
                     f"{_kib(sum(node.output.type.nbytes for node in again))}")
        for node in sorted(again, key=lambda n: -n.output.type.nbytes)[:12]:
            lines.append(f"    {_kib(node.output.type.nbytes):>12}  {node.op} -> "
                         f"{node.output.type}{'  ' + node.loc if node.loc else ''}")
        return "\n".join(lines)

    def recomputed(self) -> list[Node]:
        """The forward nodes whose results the backward pass recomputes rather than keeps
        (`rematerialize`, on the graph as the passes before fusion leave it)."""
        from ember.driver import optimize
        from ember.passes.rematerialize import Rematerialize, recomputed

        assert self.exe is not None
        pipeline = _train_pipeline(self._opt_level)
        at = next((i for i, p in enumerate(pipeline) if isinstance(p, Rematerialize)), None)
        if at is None:
            return []
        return recomputed(optimize(self.exe.traced, self._opt_level, pipeline[:at],
                                   target=self._target))

    def kept_for_backward(self) -> list[Value]:
        """The values the compiled step keeps from its forward pass for its backward pass:
        arena values computed before the loss and read after it (largest first). Their bytes
        (`kept_bytes`) compare with the activations PyTorch's autograd saves for the same
        step; the step's peak is the whole arena (`exe.arena_bytes`), which also holds the
        gradients and the backward's temporaries."""
        from ember.passes.plan_memory import kept_across

        if self.exe is None or self.exe.native is None:
            raise EmberError("kept_for_backward needs a compiled step (opt_level >= 1)")
        return kept_across(self.exe.graph, self.exe.graph.outputs[0])

    @property
    def kept_bytes(self) -> int:
        return sum(value.type.nbytes for value in self.kept_for_backward())


def train_step(model: Any, loss_fn: Callable[..., Any], optimizer: Any, *example_batch: Any,
               targets: int | None = None, opt_level: int = 3, target: str | Target = "cpu",
               threads: int | None = None, seed: int | None = None) -> TrainStep:
    """Compile one training step of `model`: `loss = step(*batch)` runs the forward pass, the
    loss `loss_fn(model(*inputs), *targets)`, the backward pass and `optimizer`'s update in
    one native call, and updates the parameters, BatchNorm's running statistics and the
    optimizer's state in place. The batch holds the model's inputs then the loss's targets
    (`targets` of them: by default, the loss's positional parameters after the first).

    Hyper-parameters are run-time numbers: changing a learning rate (or a scheduler's step)
    never recompiles. Dropout draws a fresh mask every step from `seed` (default: drawn from
    `ember.manual_seed`'s generator, so runs are reproducible).
    """
    return TrainStep(model, loss_fn, optimizer, *example_batch, targets=targets,
                     opt_level=opt_level, target=target, threads=threads, seed=seed)


def train_graph(model: Any, loss_fn: Callable[..., Any], optimizer: Any, *example_batch: Any,
                targets: int | None = None) -> Graph:
    """The graph `train_step` compiles, as traced (forward, backward and the optimizer's
    update; no pass has run): what `ember ir` shows for a training file."""
    step = TrainStep(model, loss_fn, optimizer, *example_batch, targets=targets, opt_level=0,
                     compile=False)
    return step.traced_graph()


def _train_pipeline(opt_level: int) -> list[Any]:
    """The default pipeline of `opt_level` with `rematerialize` before fusion (elementwise
    activations the backward pass can recompute from what it keeps anyway are not kept) and
    fusion in phases (the backward's kernels stay apart from the forward's, so recomputed
    values are computed where they are read)."""
    from ember.passes import default_pipeline
    from ember.passes.fuse import FuseOperators
    from ember.passes.rematerialize import Rematerialize

    pipeline = default_pipeline(opt_level)
    names = [p.name for p in pipeline]
    if "fuse" in names:
        at = names.index("fuse")
        pipeline[at:at + 1] = [Rematerialize(), FuseOperators(phases=True)]
    return pipeline


def _kib(count: int) -> str:
    return f"{count / 1024:.1f} KiB"


def _name_of(model: Any) -> str:
    return type(model).__name__.lower() + "_train" if type(model).__name__ else "train"


def _param_name(traced: Any, param: Any) -> str:
    return next(name for name, obj in traced.state if obj is param)


def _modules(model: Any) -> list[Any]:
    modules = getattr(model, "modules", None)
    return list(modules()) if modules is not None else []


def _buffer_slot(name: str, obj: Any) -> _Slot:
    def assign(value: np.ndarray) -> None:
        obj.data[...] = value

    return _Slot(name, lambda: obj.data, assign)


def _state_slot(optimizer: Any, param: Any, name: str) -> _Slot:
    def array() -> np.ndarray:
        return optimizer.state[param][name]

    def assign(value: np.ndarray) -> None:
        optimizer.state[param][name][...] = value

    return _Slot(name, array, assign)


def _alias_plan(exe: Executable, first: int, count: int, inputs: list[int | None]) -> list[bool]:
    """For each state output (outputs first .. first + count), whether the compiled code may
    write it straight into the array of the input it replaces.

    That holds when the node computing it is elementwise (element i written after element i of
    every input was read, and at no other index), every output of that node has the input's
    shape, and no other node reads the input after that node. Otherwise the result goes to a
    fresh array and is copied back after the call.
    """
    from ember.passes._liveness import is_elementwise

    if exe.native is None:
        return [False] * count
    graph = exe.graph
    order = {node: i for i, node in enumerate(graph.nodes)}
    last_read: dict[Value, int] = {}
    for i, node in enumerate(graph.nodes):
        for value in node.inputs:
            last_read[value] = i
    copied = {index for index, _ in exe.native.program.output_copies}
    plan = []
    seen: set[int] = set()
    for k in range(count):
        index = inputs[k]
        output = graph.outputs[first + k]
        producer: Node | None = graph.producers.get(output)
        ok = (index is not None and index not in seen and producer is not None
              and first + k not in copied and is_elementwise(producer)
              and graph.outputs.count(output) == 1)
        if ok:
            source = graph.inputs[index]
            ok = (all(v.type.shape == source.type.shape for v in producer.outputs)
                  and source.type == output.type
                  and last_read.get(source, -1) <= order[producer])
        if ok:
            seen.add(index)
        plan.append(bool(ok))
    return plan
