"""`Module` and `Parameter`: PyTorch's model-building API over numpy arrays.

A Module registers the Parameters, buffers and sub-Modules assigned to its attributes, in
assignment order, so `named_parameters()` and `state_dict()` have PyTorch's names and order
("0.weight", "encoder.norm.bias", ...). Parameters hold numpy arrays; inside a trace they act
as tensors and become named constants of the graph.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from ember.errors import EmberError


class Parameter:
    """A learnable array of a Module. Inside traced code it acts as a tensor."""

    __array_priority__ = 1000

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        array = np.array(data, copy=True)
        if array.dtype.kind == "f" and array.dtype != np.float64:
            array = array.astype(np.float32)
        self.data: np.ndarray = array
        self.requires_grad = requires_grad

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


for _name in (
    "__add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ __truediv__ __rtruediv__ __pow__ "
    "__rpow__ __matmul__ __rmatmul__ __neg__ __abs__ __getitem__ __lt__ __le__ __gt__ __ge__"
).split():
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
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise EmberError(f"{type(self).__name__}.__init__ must call super().__init__() "
                             "before assigning attributes")
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
        object.__delattr__(self, name)

    def register_buffer(self, name: str, array: Any) -> None:
        setattr(self, name, Buffer(array))

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is None:
            object.__setattr__(self, name, None)
            return
        setattr(self, name, param)

    def add_module(self, name: str, module: Module) -> None:
        setattr(self, name, module)

    # -- calling -------------------------------------------------------------------------------

    def forward(self, *args: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # -- traversal -----------------------------------------------------------------------------

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        return (m for _, m in self.named_modules())

    def children(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        seen: set[int] = set()
        for module_name, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                if id(param) not in seen:  # shared (tied) parameters are listed once
                    seen.add(id(param))
                    yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self) -> Iterator[Parameter]:
        return (p for _, p in self.named_parameters())

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Buffer]]:
        for module_name, module in self.named_modules(prefix):
            for name, buffer in module._buffers.items():
                yield (f"{module_name}.{name}" if module_name else name), buffer

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Parameters and buffers by name, as copies of their numpy arrays (PyTorch's order)."""
        state: OrderedDict[str, np.ndarray] = OrderedDict()
        for module_name, module in self.named_modules():
            prefix = f"{module_name}." if module_name else ""
            for name, param in (*module._parameters.items(), *module._buffers.items()):
                state[prefix + name] = param.data.copy()
        return state

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Copy arrays into parameters and buffers; shapes must match. Accepts numpy arrays or
        anything with `.numpy()` / `.detach()` (a PyTorch state dict)."""
        own = {**dict(self.named_parameters()), **dict(self.named_buffers())}
        if strict:
            missing = sorted(set(own) - set(state))
            unexpected = sorted(set(state) - set(own))
            if missing or unexpected:
                raise EmberError(f"load_state_dict for {type(self).__name__}: missing keys "
                                 f"{missing}, unexpected keys {unexpected}")
        for name, value in state.items():
            if name not in own:
                continue
            array = _to_numpy(value)
            target = own[name]
            if array.shape != target.data.shape:
                raise EmberError(f"load_state_dict: {name} has shape {list(array.shape)}, the "
                                 f"model expects {list(target.data.shape)}")
            target.data = array.astype(target.data.dtype, copy=True)

    def train(self, mode: bool = True) -> Module:
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

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


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "cpu"):
        value = value.cpu()
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    return np.asarray(value)
