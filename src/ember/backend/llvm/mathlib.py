"""Math functions for generated kernels: `call(builder, module, name, args, dtype)`.

The branch-free polynomial implementations of `vecmath` are used where they exist (inlined and
vectorizable: no per-element library calls). Any function `vecmath` does not provide for a
dtype is built from LLVM intrinsics and the C library as a fallback, which is correct but runs
one element at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from llvmlite import ir

from ember.ir.types import DType

Builder = ir.IRBuilder


def _vecmath(module: ir.Module, name: str, type_: ir.Type) -> ir.Function | None:
    try:
        from ember.backend.llvm import vecmath
    except ImportError:
        return None
    try:
        return vecmath.math_function(module, name, type_)
    except (KeyError, ValueError, NotImplementedError):
        return None


def _intrinsic(builder: Builder, module: ir.Module, name: str, args: list[ir.Value]) -> ir.Value:
    return builder.call(module.declare_intrinsic(name, [args[0].type]), args)


def _libm(builder: Builder, module: ir.Module, name: str, args: list[ir.Value]) -> ir.Value:
    type_ = args[0].type
    symbol = name + ("f" if type_ == ir.FloatType() else "")
    function = module.globals.get(symbol)
    if function is None:
        function = ir.Function(module, ir.FunctionType(type_, [type_] * len(args)), symbol)
    return builder.call(function, args)


def _sigmoid(builder: Builder, module: ir.Module, x: ir.Value) -> ir.Value:
    one = x.type(1.0)
    exp = call(builder, module, "exp", [builder.fneg(x)], _dtype(x.type))
    return builder.fdiv(one, builder.fadd(one, exp))


def _gelu(builder: Builder, module: ir.Module, x: ir.Value) -> ir.Value:
    scaled = builder.fmul(x, x.type(1 / math.sqrt(2)))
    erf = call(builder, module, "erf", [scaled], _dtype(x.type))
    half_x = builder.fmul(x, x.type(0.5))
    return builder.fmul(half_x, builder.fadd(x.type(1.0), erf))


def _gelu_tanh(builder: Builder, module: ir.Module, x: ir.Value) -> ir.Value:
    cube = builder.fmul(builder.fmul(x, x), x)
    inner = builder.fadd(x, builder.fmul(cube, x.type(0.044715)))
    tanh = call(builder, module, "tanh", [builder.fmul(inner, x.type(math.sqrt(2 / math.pi)))],
                _dtype(x.type))
    return builder.fmul(builder.fmul(x, x.type(0.5)), builder.fadd(x.type(1.0), tanh))


def _silu(builder: Builder, module: ir.Module, x: ir.Value) -> ir.Value:
    return builder.fmul(x, _sigmoid(builder, module, x))


_FALLBACKS: dict[str, Callable[..., ir.Value]] = {
    "exp": lambda b, m, x: _intrinsic(b, m, "llvm.exp", [x]),
    "log": lambda b, m, x: _intrinsic(b, m, "llvm.log", [x]),
    "sin": lambda b, m, x: _intrinsic(b, m, "llvm.sin", [x]),
    "cos": lambda b, m, x: _intrinsic(b, m, "llvm.cos", [x]),
    "pow": lambda b, m, x, y: _intrinsic(b, m, "llvm.pow", [x, y]),
    "tanh": lambda b, m, x: _libm(b, m, "tanh", [x]),
    "erf": lambda b, m, x: _libm(b, m, "erf", [x]),
    "sigmoid": _sigmoid,
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "silu": _silu,
}


def _dtype(type_: ir.Type) -> DType:
    return DType.F32 if type_ == ir.FloatType() else DType.F64


def call(builder: Builder, module: ir.Module, name: str, args: list[ir.Value],
         dtype: DType) -> ir.Value:
    """Emit `name(args)` for float `dtype`: vecmath when it has it, else the fallback."""
    function = _vecmath(module, name, args[0].type)
    if function is not None:
        return builder.call(function, args)
    fallback = _FALLBACKS.get(name)
    if fallback is None:
        from ember.errors import LoweringError

        raise LoweringError(name, f"no math function {name!r} for {dtype}")
    return fallback(builder, module, *args)
