"""The statements a fuzz program is made of: one `op_<kind>` method per kind.

Each picks operands (existing values or new inputs), writes the statement in Ember and in numpy
(the numpy spelling rounds float results with `O.rnd`, names the documented error of the op in
ulps and perturbs the operands of accumulations with `O.acc`), and hands both to `emit`, which
keeps the statement only if numpy can compute it."""

from __future__ import annotations

import math

import numpy as np

from ember.testing._program import FLOATS, INTS, NUMERIC, Input, promote

# name: (Ember spellings, numpy expression, ulps of the documented bound; sign of zero defined)
_UNARY_FLOAT = {
    "neg": (["-{x}", "np.negative({x})"], "-{x}", 0, True),
    "abs": (["abs({x})", "{x}.abs()", "np.abs({x})"], "np.abs({x})", 0, True),
    "sign": (["np.sign({x})"], "np.sign({x})", 0, False),
    "exp": (["np.exp({x})", "{x}.exp()"], "np.exp({x})", 2, False),
    "log": (["np.log({x})", "{x}.log()"], "np.log({x})", 3, False),
    "sqrt": (["np.sqrt({x})", "{x}.sqrt()"], "np.sqrt({x})", 1, True),
    "reciprocal": (["np.reciprocal({x})", "1.0 / {x}"], "1.0 / {x}", 1, False),
    "sin": (["np.sin({x})"], "np.sin({x})", "O.trig_ulps({x})", False),
    "cos": (["np.cos({x})"], "np.cos({x})", "O.trig_ulps({x})", False),
    "floor": (["np.floor({x})"], "np.floor({x})", 0, True),
    "ceil": (["np.ceil({x})"], "np.ceil({x})", 0, True),
    "rint": (["np.rint({x})"], "np.rint({x})", 0, True),
    "tanh": (["np.tanh({x})", "{x}.tanh()", "F.tanh({x})"], "np.tanh({x})", 4, False),
    "sigmoid": (["F.sigmoid({x})", "{x}.sigmoid()"], "O.sigmoid({x})", 3, False),
    "relu": (["F.relu({x})", "{x}.relu()"], "O.relu({x})", 0, True),
    "silu": (["F.silu({x})"], "O.silu({x})", 4, False),
    "gelu": (["F.gelu({x})"], "O.gelu({x})", "O.gelu_ulps({x}, '{dt}')", False),
    "gelu_tanh": (["F.gelu({x}, approximate='tanh')"], "O.gelu_tanh({x})",
                  "O.gelu_tanh_ulps({x}, '{dt}')", False),
    "leaky_relu": (["F.leaky_relu({x}, 0.25)"], "O.leaky_relu({x}, 0.25)", 1, False),
}
_UNARY_INT = {"neg": (["-{x}"], "-{x}"), "abs": (["abs({x})"], "np.abs({x})"),
              "sign": (["np.sign({x})"], "np.sign({x})"), "relu": (["F.relu({x})"], "O.relu({x})")}

# name: (Ember spellings, numpy expression, ulps, sign of zero defined, integer ok)
_BINARY = {
    "add": (["{a} + {b}", "np.add({a}, {b})"], "{a} + {b}", 1, True, True),
    "sub": (["{a} - {b}", "np.subtract({a}, {b})"], "{a} - {b}", 1, True, True),
    "mul": (["{a} * {b}", "np.multiply({a}, {b})"], "{a} * {b}", 1, True, True),
    "div": (["{a} / {b}", "np.divide({a}, {b})"], "{a} / {b}", 1, True, False),
    "maximum": (["np.maximum({a}, {b})"], "O.maximum({a}, {b})", 0, True, True),
    "minimum": (["np.minimum({a}, {b})"], "O.minimum({a}, {b})", 0, True, True),
    "pow": (["{a} ** {b}", "np.power({a}, {b})"], "O.power({a}, {b})",
            "O.pow_ulps({a}, {b}, '{dt}')",
            False, False),
}
_COMPARE = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


class Statements:
    """The statement kinds of `ember.testing._generate.Builder` (a mixin: it provides `pick`,
    `fresh`, `emit` and the other helpers these use)."""


    def op_unary(self) -> bool:
        x = self.pick(NUMERIC)
        dt = self.dt(x)
        if dt in INTS:
            spellings, expr = _UNARY_INT[self.choice(sorted(_UNARY_INT))]
            return self.emit(self.choice(spellings).format(x=x), expr.format(x=x), (x,), dt)
        name = self.choice(sorted(_UNARY_FLOAT))
        spellings, expr, ulps, exact = _UNARY_FLOAT[name]
        ulps = ulps.format(x=x, dt=dt) if isinstance(ulps, str) else ulps
        return self.emit(self.choice(spellings).format(x=x),
                         f"O.rnd({expr.format(x=x)}, '{dt}', {ulps})", (x,), dt, exact)

    def _operand(self, a: str, dts: tuple[str, ...]) -> str:
        shape = self.dims(a)
        return self.pick(dts, lambda s: self.fits(shape, s), lambda: self.broadcastable(shape),
                         secondary=True)

    def _cast_to(self, name: str, target: str) -> str:
        dt = self.dt(name)
        return name if dt == target else f"O.cast({name}, '{dt}', '{target}')"

    def op_binary(self) -> bool:
        a = self.pick(NUMERIC)
        name = self.choice(sorted(_BINARY))
        spellings, expr, ulps, exact, int_ok = _BINARY[name]
        same = (self.dt(a),) if self.rng.random() < 0.85 else NUMERIC
        b = self._operand(a, same)
        if not b:
            return False
        dt = promote(self.dt(a), self.dt(b))
        if dt in INTS and not int_ok:
            return False
        if self.rng.random() < 0.5:
            a, b = b, a
        na, nb = self._cast_to(a, dt), self._cast_to(b, dt)
        numpy = expr.format(a=na, b=nb)
        if dt in FLOATS:
            ulps = ulps.format(a=na, b=nb, dt=dt) if isinstance(ulps, str) else ulps
            numpy = f"O.rnd({numpy}, '{dt}', {ulps})"
        return self.emit(self.choice(spellings).format(a=a, b=b), numpy, (a, b), dt, exact)

    def op_scalar(self) -> bool:
        x = self.pick(NUMERIC)
        dt = self.dt(x)
        if dt in INTS:
            value = int(self.rng.integers(-3, 4))
            op = self.choice(["+", "-", "*"])
            ember, numpy = self.choice([(f"{x} {op} {value}", f"{x} {op} {value}"),
                                        (f"{value} {op} {x}", f"{value} {op} {x}")])
            return self.emit(ember, f"({numpy}).astype(O.HELD['{dt}'])", (x,), dt, True)
        value = float(self.choice([2.0, 0.5, -1.5, 3.0, 1e-3, 0.1, 1e30, -0.0, math.inf]))
        op = self.choice(["+", "-", "*", "/", "**"])
        if op == "**":
            value = float(self.choice([2.0, 0.5, 3.0, -1.0, 0.0]))
        s = repr(value) if math.isfinite(value) else "inf"
        if self.rng.random() < 0.5 and op != "**":
            ember, numpy = f"{s} {op} {x}", f"O.sc({s}, '{dt}') {op} {x}"
        elif op == "**":  # x ** 0.5 traces to sqrt (e49cc7f); other exponents are C's pow
            held = f"np.sqrt({x})" if value == 0.5 else f"O.power({x}, O.sc({s}, '{dt}'))"
            ember, numpy = f"{x} ** {s}", held
        else:
            ember, numpy = f"{x} {op} {s}", f"{x} {op} O.sc({s}, '{dt}')"
        ulps = f"O.pow_ulps({x}, {s}, '{dt}')" if op == "**" else "1"
        return self.emit(ember, f"O.rnd({numpy}, '{dt}', {ulps})", (x,), dt, op in "+-*/")

    def op_compare(self) -> bool:
        a = self.pick((*NUMERIC, "bool"))
        name = self.choice(sorted(_COMPARE) if self.dt(a) != "bool" else ["eq", "ne"])
        b = self._operand(a, (self.dt(a),))
        if not b:
            return False
        symbol = _COMPARE[name]
        ember = self.choice([f"{a} {symbol} {b}", f"np.{_ufunc(name)}({a}, {b})"])
        return self.emit(ember, f"{a} {symbol} {b}", (a, b), "bool")

    def op_logical(self) -> bool:
        a = self.pick(("bool",))
        if self.rng.random() < 0.25:
            return self.emit(f"~{a}", f"~{a}", (a,), "bool")
        b = self._operand(a, ("bool",))
        if not b:
            return False
        symbol = self.choice(["&", "|", "^"])
        return self.emit(f"{a} {symbol} {b}", f"{a} {symbol} {b}", (a, b), "bool")

    def op_where(self) -> bool:
        cond = self.pick(("bool",))
        a = self._operand(cond, NUMERIC)
        if not a:
            return False
        b = self._operand(a, (self.dt(a),))
        if not b or not self.fits(np.broadcast_shapes(self.dims(a), self.dims(b)),
                                  self.dims(cond)):
            return False
        fn = self.choice(["ember.where", "np.where"])
        return self.emit(f"{fn}({cond}, {a}, {b})", f"np.where({cond}, {a}, {b})",
                         (cond, a, b), self.dt(a), True)

    def op_clip(self) -> bool:
        x = self.pick(NUMERIC)
        dt = self.dt(x)
        if dt in INTS:
            low, high = self.choice([(-3, 5), (None, 2), (0, None), (4, 1)])
        else:
            low, high = self.choice([(-1.0, 1.0), (0.0, None), (None, 0.5), (-0.0, 6.0),
                                     (2.0, -2.0), (-math.inf, 1e30)])
        fmt = lambda v: "None" if v is None else (repr(v) if v != -math.inf else "-inf")  # noqa: E731
        held = lambda v: "None" if v is None else f"O.sc({fmt(v)}, '{dt}')"  # noqa: E731
        ember = self.choice([f"{x}.clip({fmt(low)}, {fmt(high)})",
                             f"np.clip({x}, {fmt(low)}, {fmt(high)})"])
        return self.emit(ember, f"O.clip({x}, {held(low)}, {held(high)})", (x,), dt, True)

    def op_cast(self) -> bool:
        x = self.pick((*NUMERIC, "bool"))
        src = self.dt(x)
        dst = self.choice([d for d in (*NUMERIC, "bool") if d != src])
        if src in FLOATS and dst in INTS:
            value = self.env[x]
            limit = 2.0**31 if dst == "i32" else 2.0**63
            if not np.all(np.isfinite(value) & (np.abs(value) < limit / 2)):
                return False  # float -> int is undefined for nan, inf and out-of-range values
        spelling = {"f32": "np.float32", "f64": "np.float64", "i32": "np.int32",
                    "i64": "np.int64", "bool": "np.bool_"}[dst]
        return self.emit(f"{x}.astype({spelling})", f"O.cast({x}, '{src}', '{dst}')", (x,), dst,
                         True)

    def _axes(self, rank: int):
        rng = self.rng
        roll = rng.random()
        if roll < 0.25 or rank == 0:
            return None
        if roll < 0.7:
            axis = int(rng.integers(0, rank))
            return axis - rank if rng.random() < 0.3 else axis
        count = int(rng.integers(1, rank + 1))
        return tuple(sorted(int(a) for a in rng.choice(rank, size=count, replace=False)))

    def op_reduce(self) -> bool:
        x = self.pick(NUMERIC)
        dt, shape = self.dt(x), self.dims(x)
        ops = ["sum", "max", "min", "prod"] + (["mean", "var"] if dt in FLOATS else [])
        name = self.choice(ops)
        axis, keep = self._axes(len(shape)), bool(self.rng.random() < 0.4)
        axes = tuple(range(len(shape))) if axis is None else np.atleast_1d(axis)
        terms = math.prod(shape[a] for a in axes) if shape else 1
        if name == "var":
            ddof = int(self.rng.integers(0, 2))
            ember = f"{x}.var(axis={axis!r}, keepdims={keep}, ddof={ddof})"
            value = f"O.var(O.acc({x}, '{dt}', {terms}), {axis!r}, {keep}, {ddof})"
            bound = f"np.sum(O.fin({x}) ** 2 + O.fin({x}), axis={axis!r}, keepdims={keep})"
            return self.emit(ember, f"O.rnd(O.guard({value}, {bound}, '{dt}'), '{dt}', 2)",
                             (x,), dt)
        ember = self.choice([f"{x}.{name}(axis={axis!r}, keepdims={keep})",
                             f"np.{name}({x}, axis={axis!r}, keepdims={keep})",
                             f"{x}.{name}(dim={axis!r}, keepdim={keep})"])
        if dt in INTS and name in ("sum", "prod"):  # wrapping in the integer dtype
            numpy = f"np.{name}({x}, axis={axis!r}, keepdims={keep}, dtype={x}.dtype)"
        elif name in ("max", "min"):
            numpy = f"O.a{name}({x}, {axis!r}, {keep})"
        else:
            value = f"np.{name}(O.acc({x}, '{dt}', {terms}), axis={axis!r}, keepdims={keep})"
            # A mean's partial sums overflow where the sum of |x| does, not where its mean does.
            bound = (f"O.prod_bound({x}, {axis!r}, {keep})" if name == "prod" else
                     f"np.sum(O.fin({x}), axis={axis!r}, keepdims={keep})")
            underflow = ", underflow=True" if name == "prod" else ""
            numpy = f"O.rnd(O.guard({value}, {bound}, '{dt}'{underflow}), '{dt}', 1)"
        return self.emit(ember, numpy, (x,), dt, name in ("max", "min"))

    def op_arg(self) -> bool:
        x = self.pick(NUMERIC)
        rank = len(self.dims(x))
        name = self.choice(["argmax", "argmin"])
        axis = None if rank == 0 or self.rng.random() < 0.3 else int(self.rng.integers(0, rank))
        keep = bool(self.rng.random() < 0.3) and axis is not None
        ember = self.choice([f"{x}.{name}(axis={axis!r}, keepdims={keep})",
                             f"np.{name}({x}, axis={axis!r}, keepdims={keep})"])
        return self.emit(ember, f"np.{name}({x}, axis={axis!r}, keepdims={keep})"
                         ".astype(np.int64)", (x,), "i64")

    def _matmul_b_shape(self, a: tuple[int, ...]) -> tuple[int, ...]:
        k, n = a[-1], int(self.choice([1, 2, 3, 5, 8, 16]))
        if len(a) == 1:
            return self.choice([(k,), (k, n), (2, k, n)])
        batch = a[:-2]
        return self.choice([(k,), (k, n), (*batch, k, n),
                            (*(1 for _ in batch), k, n), (3, *batch, k, n)])

    def op_matmul(self) -> bool:
        a = self.pick(NUMERIC, lambda s: len(s) >= 1)
        if not a:
            return False
        dt = self.dt(a)
        b = self.pick((dt,), fresh_shape=lambda: self._matmul_b_shape(self.dims(a)),
                      secondary=True)
        if self.rng.random() < 0.4:
            a, b = b, a
        k = self.dims(a)[-1] if self.dims(a) else 1
        ember = self.choice([f"{a} @ {b}", f"np.matmul({a}, {b})"])
        value = f"np.matmul(O.acc({a}, '{dt}', {k}), O.acc({b}, '{dt}', {k}))"
        bound = f"np.matmul(O.fin({a}), O.fin({b}))"
        numpy = (f"np.matmul({a}, {b})" if dt in INTS else
                 f"O.rnd(O.guard({value}, {bound}, '{dt}'), '{dt}', 1)")
        return self.emit(ember, numpy, (a, b), dt)

    def op_linear(self) -> bool:
        x = self.pick(FLOATS, lambda s: 1 <= len(s) <= 3)
        if not x:
            return False
        dt, k = self.dt(x), self.dims(x)[-1]
        out = int(self.choice([1, 3, 4, 8]))
        w = self.fresh(dt, (out, k), const=None)
        bias = self.fresh(dt, (out,), const=None) if self.rng.random() < 0.6 else None
        plus = f" + {bias}" if bias else ""
        value = f"O.acc({x}, '{dt}', {k}) @ O.acc({w}, '{dt}', {k}).T{plus}"
        bound = f"O.fin({x}) @ O.fin({w}).T" + (f" + O.fin({bias})" if bias else "")
        numpy = f"O.rnd(O.guard({value}, {bound}, '{dt}'), '{dt}', 2)"
        ember = f"F.linear({x}, {w}{f', {bias}' if bias else ''})"
        return self.emit(ember, numpy, (x, w) + ((bias,) if bias else ()), dt)

    def _image(self) -> str:
        def shape():
            rank = int(self.choice([4, 4, 3]))
            dims = [int(self.choice([1, 2, 3])), int(self.choice([1, 2, 3, 4])),
                    int(self.choice([1, 3, 4, 5, 7, 8])), int(self.choice([1, 2, 4, 5, 6]))]
            return tuple(dims[4 - rank:])
        return self.pick(FLOATS, lambda s: len(s) in (3, 4) and all(s), shape)

    def op_conv(self) -> bool:
        x = self._image()
        if not x:
            return False
        rng, dt, shape = self.rng, self.dt(x), self.dims(x)
        channels = shape[-3]
        groups = int(self.choice([g for g in (1, 2, 3, 4) if channels % g == 0]))
        out = groups * int(self.choice([1, 2, 3]))
        kh, kw = int(self.choice([1, 2, 3])), int(self.choice([1, 2, 3]))
        stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        dilation = (int(rng.integers(1, 3)), 1) if rng.random() < 0.2 else (1, 1)
        if rng.random() < 0.15 and stride == (1, 1):
            padding = "'same'"
            total = [dilation[0] * (kh - 1), dilation[1] * (kw - 1)]
            pads = (total[0] // 2, total[1] // 2, total[0] - total[0] // 2,
                    total[1] - total[1] // 2)
        else:
            ph, pw = int(rng.integers(0, 3)), int(rng.integers(0, 3))
            padding, pads = repr((ph, pw)), (ph, pw, ph, pw)
        w = self.fresh(dt, (out, channels // groups, kh, kw), const=None)
        bias = self.fresh(dt, (out,), const=None) if rng.random() < 0.5 else None
        terms = channels // groups * kh * kw
        attrs = f"{stride}, {pads}, {dilation}, {groups}"
        value = (f"O.conv2d(O.acc({x}, '{dt}', {terms}), O.acc({w}, '{dt}', {terms}), {bias}, "
                 f"{attrs})")
        abs_bias = f"O.fin({bias})" if bias else "None"
        bound = f"O.conv2d(O.fin({x}), O.fin({w}), {abs_bias}, {attrs})"
        numpy = f"O.rnd(O.guard({value}, {bound}, '{dt}'), '{dt}', 2)"
        ember = (f"F.conv2d({x}, {w}, {bias}, stride={stride}, padding={padding}, "
                 f"dilation={dilation}, groups={groups})")
        return self.emit(ember, numpy, (x, w) + ((bias,) if bias else ()), dt)

    def op_pool(self) -> bool:
        x = self._image()
        if not x:
            return False
        rng, dt = self.rng, self.dt(x)
        kind = self.choice(["max", "avg", "adaptive"])
        if kind == "adaptive":
            size = (int(self.choice([1, 2, 3])), int(self.choice([1, 2])))
            terms = math.prod(self.dims(x)[-2:])
            value = f"O.adaptive_avg_pool2d(O.acc({x}, '{dt}', {terms}), {size})"
            bound = f"O.adaptive_avg_pool2d(O.fin({x}), {size}) * {terms}"
            return self.emit(f"F.adaptive_avg_pool2d({x}, {size})",
                             f"O.rnd(O.guard({value}, {bound}, '{dt}'), '{dt}', 2)", (x,), dt)
        kernel = (int(self.choice([1, 2, 3])), int(self.choice([1, 2, 3])))
        stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        pad = (int(rng.integers(0, kernel[0] // 2 + 1)), int(rng.integers(0, kernel[1] // 2 + 1)))
        ceil = bool(rng.random() < 0.3)
        if kind == "max":
            dilation = (int(rng.integers(1, 3)), 1)
            return self.emit(f"F.max_pool2d({x}, {kernel}, {stride}, {pad}, {dilation}, "
                             f"ceil_mode={ceil})",
                             f"O.max_pool2d({x}, {kernel}, {stride}, {pad}, {dilation}, {ceil})",
                             (x,), dt)
        include = bool(rng.random() < 0.6)
        divisor = int(self.choice([2, 5])) if rng.random() < 0.15 else None
        terms = kernel[0] * kernel[1]
        return self.emit(f"F.avg_pool2d({x}, {kernel}, {stride}, {pad}, ceil_mode={ceil}, "
                         f"count_include_pad={include}, divisor_override={divisor})",
                         f"O.rnd(O.guard(O.avg_pool2d(O.acc({x}, '{dt}', {terms}), {kernel}, "
                         f"{stride}, {pad}, {ceil}, {include}, {divisor}), O.avg_pool2d("
                         f"O.fin({x}), {kernel}, {stride}, {pad}, {ceil}, True, 1), '{dt}'), "
                         f"'{dt}', 2)", (x,), dt)

    def op_norm(self) -> bool:
        rng = self.rng
        if rng.random() < 0.5:
            x = self.pick(FLOATS, lambda s: len(s) >= 1 and all(s))
            if not x:
                return False
            dt, shape = self.dt(x), self.dims(x)
            count = int(rng.integers(1, min(len(shape), 2) + 1))
            normalized = shape[len(shape) - count:]
            w, b = self.fresh(dt, normalized), self.fresh(dt, normalized)
            terms = math.prod(normalized)
            return self.emit(f"F.layer_norm({x}, {normalized}, {w}, {b}, eps=1e-5)",
                             f"O.rnd(O.layer_norm(O.acc({x}, '{dt}', {terms}), {w}, {b}, 1e-5, "
                             f"'{dt}'), '{dt}', 4)", (x, w, b), dt)
        x = self.pick(FLOATS, lambda s: len(s) in (2, 3, 4) and all(s))
        if not x:
            return False
        dt, shape = self.dt(x), self.dims(x)
        c = (shape[1],)
        w, b = self.fresh(dt, c), self.fresh(dt, c)
        if rng.random() < 0.3:
            # The batch statistics are sums of squares: where those overflow float64 (|x| above
            # 1e154, f64 programs only), PyTorch's double accumulation cannot do better either.
            terms = math.prod(shape) // shape[1]
            axes = tuple(a for a in range(len(shape)) if a != 1)
            value = f"O.batch_norm_train(O.acc({x}, '{dt}', {terms}), {w}, {b}, 1e-5, '{dt}')"
            bound = f"np.sum(O.fin({x}) ** 2, axis={axes}, keepdims=True)"
            return self.emit(f"F.batch_norm({x}, None, None, {w}, {b}, training=True)",
                             f"O.rnd(O.guard({value}, {bound}, 'f64'), '{dt}', 4)",
                             (x, w, b), dt)
        mean, variance = self.fresh(dt, c), self.fresh(dt, c, positive=True)
        # Which intermediate overflows depends on the order of the products: not compared.
        value = f"O.batch_norm({x}, {mean}, {variance}, {w}, {b}, 1e-5, '{dt}')"
        bound = f"O.batch_norm_bound({x}, {mean}, {variance}, {w}, {b}, 1e-5)"
        return self.emit(f"F.batch_norm({x}, {mean}, {variance}, {w}, {b}, eps=1e-5)",
                         f"O.rnd(O.guard({value}, {bound}, '{dt}'), '{dt}', 4)",
                         (x, mean, variance, w, b), dt)

    def op_softmax(self) -> bool:
        x = self.pick(FLOATS, lambda s: len(s) >= 1)
        if not x:
            return False
        dt, rank = self.dt(x), len(self.dims(x))
        axis = int(self.rng.integers(-rank, rank))
        terms = self.dims(x)[axis]
        name = self.choice(["softmax", "log_softmax"])
        ember = f"F.{name}({x}, dim={axis})" if name == "log_softmax" else self.choice(
            [f"F.softmax({x}, dim={axis})", f"{x}.softmax({axis})"])
        return self.emit(ember, f"O.rnd(O.{name}(O.acc({x}, '{dt}', {terms}), {axis}, '{dt}'), "
                         f"'{dt}', 4)",
                         (x,), dt)

    def op_loss(self) -> bool:
        rng = self.rng
        x = self.pick(FLOATS, lambda s: len(s) == 2 and all(s))
        if not x:
            return False
        dt, (n, c) = self.dt(x), self.dims(x)
        reduction = self.choice(["mean", "sum", "none"])
        if rng.random() < 0.4:
            y = self.fresh(dt, (n, c), const=None)
            value = _loss_guard(f"O.mse_loss({x}, {y}, '{reduction}', '{dt}')",
                                f"O.mse_loss({x}, {y}, 'none', 'f64')", reduction, dt)
            return self.emit(f"F.mse_loss({x}, {y}, reduction='{reduction}')",
                             f"O.rnd({value}, '{dt}', 2)", (x, y), dt)
        target = self._name("x")
        array = rng.integers(0, c, size=n).astype(np.int64)
        self.inputs.append(Input(target, "i64", array))
        self.types[target] = ("i64", array.shape)
        self.env[target] = array
        value = _loss_guard(
            f"O.cross_entropy(O.acc({x}, '{dt}', {c}), {target}, '{reduction}', '{dt}')",
            f"O.cross_entropy({x}, {target}, 'none', 'f64')", reduction, dt)
        return self.emit(f"F.cross_entropy({x}, {target}, reduction='{reduction}')",
                         f"O.rnd({value}, '{dt}', 4)", (x, target), dt)

    def op_embedding(self) -> bool:
        table = self.fresh(str(self.choice(FLOATS)), (int(self.choice([1, 3, 5])),
                                                      int(self.choice([1, 2, 4]))))
        rows = self.dims(table)[0]
        index = self.pick(INTS, fresh_shape=lambda: self.shape(int(self.choice([0, 1, 2]))))
        if not index or not np.all((self.env[index] >= 0) & (self.env[index] < rows)):
            return False
        return self.emit(f"F.embedding({index}, {table})", f"{table}[{index}]",
                         (index, table), self.dt(table), True)

    # -- shape statements (exact) --

    def _any(self) -> str:
        return self.pick((*NUMERIC, "bool"))

    def op_reshape(self) -> bool:
        x = self._any()
        shape = self.dims(x)
        size = math.prod(shape)
        dims, rest = [], size
        for _ in range(int(self.rng.integers(0, 4))):
            factors = [d for d in (1, 2, 3, 4, 5, 8) if rest and rest % d == 0]
            dims.append(int(self.choice(factors)) if factors else 0)
            rest = rest // dims[-1] if dims[-1] else 0
        if size:
            dims.append(rest)
            if self.rng.random() < 0.4:
                dims[int(self.rng.integers(0, len(dims)))] = -1
        elif not dims or math.prod(dims):
            dims.append(0)
        self.rng.shuffle(dims)
        target = tuple(dims)
        ember = self.choice([f"{x}.reshape({target})", f"np.reshape({x}, {target})",
                             f"{x}.reshape(*{target})" if target else f"{x}.reshape(())"])
        return self.emit(ember, f"np.reshape({x}, {target})", (x,), self.dt(x), True)

    def op_transpose(self) -> bool:
        x = self.pick((*NUMERIC, "bool"), lambda s: len(s) >= 2)
        if not x:
            return False
        rank = len(self.dims(x))
        perm = tuple(int(p) for p in self.rng.permutation(rank))
        ember = self.choice([f"{x}.transpose({perm})", f"np.transpose({x}, {perm})",
                             f"{x}.permute(*{perm})", f"{x}.T"])
        numpy = f"{x}.T" if ember.endswith(".T") else f"np.transpose({x}, {perm})"
        return self.emit(ember, numpy, (x,), self.dt(x), True)

    def op_index(self) -> bool:
        x = self.pick((*NUMERIC, "bool"), lambda s: len(s) >= 1)
        if not x:
            return False
        rng = self.rng
        parts = []
        for size in self.dims(x):
            roll = rng.random()
            if roll < 0.3 and size:
                parts.append(str(int(rng.integers(-size, size))))
            elif roll < 0.7:
                start = self.choice(["", "1", "-2", "0"])
                stop = self.choice(["", "-1", "3", "100"])
                step = self.choice(["", "", "2", "-1", "-2"])
                parts.append(f"{start}:{stop}" + (f":{step}" if step else ""))
            else:
                parts.append(":")
            if rng.random() < 0.15:
                parts.append("None")
        if rng.random() < 0.3:
            parts = parts[: int(rng.integers(0, len(parts) + 1))]
            parts.insert(int(rng.integers(0, len(parts) + 1)), "...")
        if rng.random() < 0.15:
            parts.insert(int(rng.integers(0, len(parts) + 1)), "None")
        key = ", ".join(parts) if parts else "..."
        return self.emit(f"{x}[{key}]", f"{x}[{key}]", (x,), self.dt(x), True)

    def op_gather(self) -> bool:
        x = self.pick(NUMERIC, lambda s: len(s) >= 1 and s[0] > 0)
        if not x:
            return False
        size = self.dims(x)[0]
        count = int(self.choice([1, 2, 3, 5]))
        values = [int(v) for v in self.rng.integers(-size if self.rng.random() < 0.3 else 0,
                                                    size, size=count)]
        if self.rng.random() < 0.5:
            return self.emit(f"{x}[{values}]", f"{x}[{values}]", (x,), self.dt(x), True)
        index = self._name("x")
        array = np.array(values, dtype=np.int64)
        self.inputs.append(Input(index, "i64", array))
        self.types[index] = ("i64", array.shape)
        self.env[index] = array
        return self.emit(f"{x}[{index}]", f"{x}[{index}]", (x, index), self.dt(x), True)

    def op_concat(self) -> bool:
        a = self.pick((*NUMERIC, "bool"), lambda s: len(s) >= 1)
        if not a:
            return False
        shape, rank = self.dims(a), len(self.dims(a))
        axis = int(self.rng.integers(-rank, rank))
        stack = self.rng.random() < 0.25
        other = list(shape)
        if not stack:
            other[axis] = int(self.choice([0, 1, 2, 3]))
        same = lambda s: tuple(s) == tuple(other)  # noqa: E731
        dts = (self.dt(a),) if self.rng.random() < 0.85 else NUMERIC
        b = self.pick(dts, same, lambda: tuple(other), secondary=True)
        dt = promote(self.dt(a), self.dt(b))
        if stack:
            fn = self.choice(["ember.stack", "np.stack"])
            return self.emit(f"{fn}([{a}, {b}], axis={axis})",
                             f"np.stack([{self._cast_to(a, dt)}, {self._cast_to(b, dt)}], "
                             f"axis={axis})", (a, b), dt, True)
        fn = self.choice(["ember.concatenate", "np.concatenate"])
        return self.emit(f"{fn}([{a}, {b}, {a}], axis={axis})",
                         f"np.concatenate([{self._cast_to(a, dt)}, {self._cast_to(b, dt)}, "
                         f"{self._cast_to(a, dt)}], axis={axis})", (a, b), dt, True)

    def op_split(self) -> bool:
        x = self.pick(NUMERIC, lambda s: len(s) >= 1 and any(d > 1 for d in s))
        if not x:
            return False
        shape = self.dims(x)
        axis = self.choice([i for i, d in enumerate(shape) if d > 1])
        equal = [d for d in (2, 3, 4) if shape[axis] % d == 0]
        parts = self.choice(equal or [[1, shape[axis] - 1]])
        piece = int(self.rng.integers(0, parts if isinstance(parts, int) else len(parts) + 1))
        fn = self.choice(["ember.split", "np.split"])
        return self.emit(f"{fn}({x}, {parts}, axis={axis})[{piece}]",
                         f"np.split({x}, {parts}, axis={axis})[{piece}]", (x,), self.dt(x), True)

    def op_pad(self) -> bool:
        x = self.pick(NUMERIC, lambda s: 1 <= len(s) <= 4)
        if not x:
            return False
        rng, shape, dt = self.rng, self.dims(x), self.dt(x)
        if rng.random() < 0.5:
            mode = self.choice(["constant", "reflect", "edge"])
            widths = [(int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in shape]
            if mode == "reflect":  # as in PyTorch, a reflection is shorter than its axis
                widths = [(max(min(a, d - 1), 0), max(min(b, d - 1), 0))
                          for (a, b), d in zip(widths, shape, strict=True)]
            value = self.choice(["0.0", "1.5", "-2.0"]) if dt in FLOATS else "3"
            extra = f", constant_values={value}" if mode == "constant" else ""
            held = f", constant_values=O.sc({value}, '{dt}')" if mode == "constant" else ""
            ember = self.choice([f"np.pad({x}, {widths}, mode='{mode}'{extra})",
                                 f"ember.pad({x}, {widths}, mode='{mode}'{extra})"])
            return self.emit(ember, f"np.pad({x}, {widths}, mode='{mode}'{held})", (x,), dt, True)
        mode = self.choice(["constant", "constant", "reflect", "replicate", "circular"])
        count = int(rng.integers(1, min(len(shape), 2) + 1))
        low = -1 if mode == "constant" else 0
        pads = [int(rng.integers(low, 3)) for _ in range(2 * count)]
        # As in PyTorch: a reflection is shorter than its axis, a wrap at most as long.
        longest = {"reflect": -1, "circular": 0}.get(mode)
        if longest is not None:
            sizes = [shape[len(shape) - 1 - i // 2] for i in range(2 * count)]
            pads = [min(p, d + longest) for p, d in zip(pads, sizes, strict=True)]
            if min(pads) < 0:
                return False
        value = self.choice(["0.0", "-1.0"]) if dt in FLOATS else "0"
        held = f"O.sc({value}, '{dt}')"
        return self.emit(f"F.pad({x}, {pads}, mode='{mode}', value={value})",
                         f"O.torch_pad({x}, {pads}, '{mode}', {held})", (x,), dt, True)

    def op_broadcast(self) -> bool:
        x = self._any()
        shape = self.dims(x)
        target = tuple(int(self.choice([2, 3])) if d == 1 and self.rng.random() < 0.6 else d
                       for d in shape)
        if self.rng.random() < 0.5:
            target = (int(self.choice([1, 2, 3])), *target)
        fn = self.choice([f"{x}.broadcast_to({target})", f"np.broadcast_to({x}, {target})"])
        return self.emit(fn, f"np.broadcast_to({x}, {target})", (x,), self.dt(x), True)

    def op_squeeze(self) -> bool:
        x = self._any()
        shape = self.dims(x)
        ones = [i for i, d in enumerate(shape) if d == 1]
        roll = self.rng.random()
        if roll < 0.4 and ones:
            axis = self.choice(ones)
            return self.emit(f"{x}.squeeze({axis})", f"np.squeeze({x}, {axis})", (x,),
                             self.dt(x), True)
        if roll < 0.6 and len(shape) >= 1:
            start = int(self.rng.integers(0, len(shape)))
            return self.emit(f"{x}.flatten({start})",
                             f"np.reshape({x}, {x}.shape[:{start}] + (-1,))" if math.prod(shape)
                             else f"np.reshape({x}, {x}.shape[:{start}] + "
                                  f"(int(np.prod({x}.shape[{start}:])),))",
                             (x,), self.dt(x), True)
        axis = int(self.rng.integers(-len(shape) - 1, len(shape) + 1))
        ember = self.choice([f"{x}.unsqueeze({axis})", f"np.expand_dims({x}, {axis})"])
        return self.emit(ember, f"np.expand_dims({x}, {axis})", (x,), self.dt(x), True)


def _ufunc(name: str) -> str:
    return {"eq": "equal", "ne": "not_equal", "lt": "less", "le": "less_equal", "gt": "greater",
            "ge": "greater_equal"}[name]


def _loss_guard(value: str, terms: str, reduction: str, dt: str) -> str:
    """A mean or sum of per-sample losses overflows on the way where the finite terms add up
    past the dtype's range; such results depend on the order of the additions."""
    if reduction == "none":
        return value
    return f"O.guard({value}, np.sum(O.fin({terms})), '{dt}')"
