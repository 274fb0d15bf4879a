"""`Module` and `Parameter`: PyTorch's model-building API over numpy arrays.

A Module registers the Parameters, buffers and sub-Modules assigned to its attributes, in
assignment order, so `named_parameters()` and `state_dict()` have PyTorch's names and order
("0.weight", "encoder.norm.bias", ...). Parameters hold numpy arrays; inside a trace they act
as tensors and become named constants of the graph.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from ember.errors import EmberError


class Parameter:
    """A learnable array of a Module. Inside traced code it acts as a tensor."""

    __array_priority__ = 1000

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        if isinstance(data, Parameter):
            data = data.data
        array = np.array(_to_numpy(data), copy=True)  # never alias the caller's array
        if array.dtype.kind == "f" and array.dtype != np.float64:
            array = array.astype(np.float32)
        self.data: np.ndarray = array
        self.requires_grad = requires_grad
        self.grad: np.ndarray | None = None  # set by backward passes, read by ember.optim

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def numpy(self) -> np.ndarray:
        return self.data

    def _ember_tensor(self) -> Any:
        from ember.frontend.tracer import current

        return current().lift_parameter(self)

    def __getattr__(self, name: str) -> Any:
        # Tensor methods (reshape, T, sum, ...) on the traced value of this parameter.
        from ember.frontend.tracer import tracing

        if name.startswith("_") or not tracing():
            raise AttributeError(f"'Parameter' object has no attribute {name!r} (tensor methods "
                                 "work inside a trace; use .data for the numpy array)")
        return getattr(self._ember_tensor(), name)

    def __repr__(self) -> str:
        return f"Parameter(shape={list(self.data.shape)}, dtype={self.data.dtype})"


class Buffer(Parameter):
    """A non-learnable array of a Module's state (BatchNorm's running statistics)."""

    def __init__(self, data: Any) -> None:
        super().__init__(data, requires_grad=False)


def _forward_operator(name: str) -> Callable[..., Any]:
    def operator(self: Parameter, *args: Any) -> Any:
        return getattr(self._ember_tensor(), name)(*args)

    operator.__name__ = name
    return operator


_TENSOR_OPERATORS = (
    "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
    "__rtruediv__", "__pow__", "__rpow__", "__matmul__", "__rmatmul__", "__neg__", "__abs__",
    "__getitem__", "__lt__", "__le__", "__gt__", "__ge__",
)
for _name in _TENSOR_OPERATORS:
    setattr(Parameter, _name, _forward_operator(_name))


class Module:
    """Base class of layers and models: subclasses define `forward` and assign sub-layers."""

    def __init__(self) -> None:
        from ember.frontend.tracer import user_frame

        # Where user code created this module: the location of its nodes in traced graphs.
        object.__setattr__(self, "_ember_defined_at", user_frame())
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())  # buffer names left out of state_dict
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise EmberError(f"{type(self).__name__}.__init__ must call super().__init__() "
                             "before assigning attributes")
        if name in self._parameters and not isinstance(value, Parameter | None):
            raise EmberError(f"cannot assign a {type(value).__name__} to parameter {name!r} of "
                             f"{type(self).__name__} (an nn.Parameter or None is expected)")
        if name in self._buffers and not isinstance(value, Parameter) and value is not None:
            value = Buffer(value)  # assigning an array to a buffer keeps it a buffer (PyTorch)
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        if isinstance(value, Buffer):
            self._buffers[name] = value
        elif isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        self._non_persistent.discard(name)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, tensor: Any, persistent: bool = True) -> None:
        """Add non-learnable state; a persistent buffer is part of `state_dict()`."""
        if tensor is None:
            self._buffers.pop(name, None)
            object.__setattr__(self, name, None)
            return
        setattr(self, name, tensor if isinstance(tensor, Buffer) else Buffer(tensor))
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a learnable parameter (None records that the module has none by that name)."""
        if param is None:
            self._parameters.pop(name, None)
            object.__setattr__(self, name, None)
            return
        if not isinstance(param, Parameter):
            raise EmberError(f"cannot register a {type(param).__name__} as parameter {name!r} "
                             "(an nn.Parameter or None is expected)")
        setattr(self, name, param)

    def add_module(self, name: str, module: Module | None) -> None:
        """Add a child module, named like an attribute."""
        if module is not None and not isinstance(module, Module):
            raise EmberError(f"{type(module).__name__} is not a Module subclass")
        setattr(self, name, module)

    register_module = add_module

    # -- calling -------------------------------------------------------------------------------

    def forward(self, *args: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # -- traversal -----------------------------------------------------------------------------

    def named_modules(self, memo: set[int] | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        """This module and its descendants, depth first, each (shared ones) once."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name,
                                           remove_duplicate)

    def modules(self) -> Iterator[Module]:
        return (m for _, m in self.named_modules())

    def named_children(self) -> Iterator[tuple[str, Module]]:
        return iter(self._modules.items())

    def children(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def _named_members(self, table: str, prefix: str, recurse: bool, remove_duplicate: bool
                       ) -> Iterator[tuple[str, Parameter]]:
        seen: set[int] = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if (
            recurse) else iter([(prefix, self)])
        for module_name, module in modules:
            for name, member in getattr(module, table).items():
                if remove_duplicate and id(member) in seen:  # tied members are listed once
                    continue
                seen.add(id(member))
                yield (f"{module_name}.{name}" if module_name else name), member

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(name, Parameter) pairs in PyTorch's order: own parameters, then children's."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Buffer]]:
        """(name, Buffer) pairs in PyTorch's order."""
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)  # type: ignore[return-value]

    def buffers(self, recurse: bool = True) -> Iterator[Buffer]:
        return (b for _, b in self.named_buffers(recurse=recurse))

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call fn on every child (recursively), then on this module."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # -- state ---------------------------------------------------------------------------------

    def _state_entries(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Everything in state_dict: each module's parameters, then its persistent buffers,
        then its children; a shared module appears under every name (as in PyTorch)."""
        for name, param in self._parameters.items():
            yield prefix + name, param
        for name, buffer in self._buffers.items():
            if name not in self._non_persistent:
                yield prefix + name, buffer
        for name, child in self._modules.items():
            yield from child._state_entries(f"{prefix}{name}.")

    def state_dict(self, prefix: str = "") -> OrderedDict[str, np.ndarray]:
        """Parameters and buffers by name, as copies of their numpy arrays (PyTorch's order)."""
        return OrderedDict((name, p.data.copy()) for name, p in self._state_entries(prefix))

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True
                        ) -> IncompatibleKeys:
        """Copy arrays into parameters and buffers. Accepts numpy arrays or anything with
        `.numpy()` / `.detach()` (a PyTorch state dict).

        Shapes must match. With strict=True, missing or unexpected keys are errors too; nothing
        is changed when there is an error. Returns the missing and unexpected keys.
        """
        own = dict(self._state_entries())
        missing = [name for name in own if name not in state_dict]
        unexpected = [name for name in state_dict if name not in own]
        arrays = {name: _to_numpy(value) for name, value in state_dict.items() if name in own}
        problems = [f"size mismatch for {name}: the checkpoint has shape {list(a.shape)}, the "
                    f"model has shape {list(own[name].data.shape)}"
                    for name, a in arrays.items() if a.shape != own[name].data.shape]
        if strict and unexpected:
            problems.insert(0, f"unexpected key(s) in state_dict: {', '.join(unexpected)}")
        if strict and missing:
            problems.insert(0, f"missing key(s) in state_dict: {', '.join(missing)}")
        if problems:
            raise EmberError(f"error(s) in loading state_dict for {type(self).__name__}:\n  "
                             + "\n  ".join(problems))
        for name, array in arrays.items():
            target = own[name]
            target.data = array.astype(target.data.dtype, copy=True)
        return IncompatibleKeys(missing, unexpected)

    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and every descendant."""
        if not isinstance(mode, bool):
            raise EmberError(f"training mode is expected to be a bool, got {mode!r}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        """Inference mode (Dropout is the identity, BatchNorm uses running statistics)."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for param in self.parameters():
            param.requires_grad = requires_grad
        return self

    # -- printing ------------------------------------------------------------------------------

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            child_text = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_text}")
        if len(lines) == 1:
            return lines[0] + ")"
        return "\n".join(lines) + "\n)"


class IncompatibleKeys(NamedTuple):
    """What `load_state_dict` did not match: keys the model has and the dict lacks, and back."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "cpu"):
        value = value.cpu()
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    return np.asarray(value)
