"""One training step (forward, loss, backward, Adam update) of Ember against PyTorch.

    python benchmarks/bench_train.py                      # mlp and cnn, 1 thread then 2
    python benchmarks/bench_train.py --threads 1 --only mlp --rounds 20 --profile 10

Models (float32): `mlp`, batch 128, 1024-512-256-10 with ReLU; `cnn`, batch 32, 3x32x32,
conv(3->16, 3x3, pad 1)+ReLU+maxpool2, conv(16->32)+ReLU+maxpool2, linear(32*8*8 -> 10). Both
train with Adam (lr 1e-3) on cross_entropy. Every side starts from the same weights:

- `ember`: `ember.train_step(model, F.cross_entropy, Adam, x, y, threads=N)`, one native call.
- `torch foreach`, `torch fused`: eager PyTorch, `torch.optim.Adam(foreach=True)` / `fused=True`.
- `torch.compile`: the model and the loss compiled together (`torch.compile` of
  `cross_entropy(model(x), y)`, so its backward is compiled too by AOTAutograd), the optimizer
  eager with `fused=True`.

Each PyTorch step zeroes the gradients (set to None), runs forward and backward, steps the
optimizer and reads the loss with `.item()` (Ember's step returns the loss as a float). All
sides run in one process, alternating after warm-up: each of `--rounds` rounds runs every side
in turn for one untimed and `--block` timed calls (the first call after a switch finds caches
and threads busy with the other side), so a noisy neighbour slows all of them alike; each row
is the median of its timed calls. PyTorch's threads are set with `torch.set_num_threads`,
Ember's with `threads=` (each thread count compiles its own step).

Before timing, Ember and eager PyTorch from the same weights must agree: one SGD step (loss and
gradients) and the first Adam step (loss and update), relative error below 1e-4 (see
`agreement`; the exit status is 1 otherwise).

The floor is a time no implementation can beat: the step's matmul and convolution FLOPs
(forward, weight gradients, input gradients except the first layer's) over the host's FMA rate
(Target.host(): FMAs per cycle times float32 lanes, two FLOPs each, at the clock /proc/cpuinfo
reports, times threads). The Adam update's traffic (read p, g, m, v; write p, m, v: 28 bytes
per parameter) at 18 GB/s, DRAM's rate, is printed beside it and added in `serial`, the floor
of a step whose update starts after the arithmetic and streams from DRAM; where the optimizer
state stays in a large L3 between steps, a step can beat that sum (seen: 104%), not the
arithmetic alone.

Memory: Ember's arena (every intermediate of the step, forward and backward, in one planned
buffer) against the bytes PyTorch saves for backward, counted with
`torch.autograd.graph.saved_tensors_hooks` (unique storages, parameters and the batch
excluded), and PyTorch's parameter gradients (which Ember keeps in its arena).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ember
from ember import nn
from ember.bench import machine_info
from ember.nn import functional as F
from ember.testing.torch_memory import torch_saved_bytes

ADAM_BYTES_PER_PARAM = 28  # read p, g, m, v; write p, m, v (float32)
MEMORY_BANDWIDTH = 18e9  # bytes/s, one socket's DRAM bandwidth as measured for a stream


@dataclass
class Case:
    """One model: Ember's module, a batch, and its FLOPs per training step."""

    name: str
    model: Any
    x: np.ndarray
    y: np.ndarray
    flops: int


def linear_flops(batch: int, fan_in: int, fan_out: int, first: bool) -> int:
    """Forward, weight gradient, and (unless first) input gradient: 2 FLOPs per MAC each."""
    return 2 * batch * fan_in * fan_out * (2 if first else 3)


def conv_flops(batch: int, cin: int, cout: int, size: int, first: bool) -> int:
    """A 3x3 stride-1 'same' convolution on size x size maps, counted like `linear_flops`."""
    return linear_flops(batch * size * size, cin * 9, cout, first)


def mlp_case(rng: np.random.Generator) -> Case:
    model = nn.Sequential(nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    batch = 128
    flops = (linear_flops(batch, 1024, 512, True) + linear_flops(batch, 512, 256, False)
             + linear_flops(batch, 256, 10, False))
    return Case("mlp", model, rng.standard_normal((batch, 1024)).astype(np.float32),
                rng.integers(0, 10, batch), flops)


def cnn_case(rng: np.random.Generator) -> Case:
    model = nn.Sequential(
        nn.Conv2d(3, 16, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 10))
    batch = 32
    flops = (conv_flops(batch, 3, 16, 32, True) + conv_flops(batch, 16, 32, 16, False)
             + linear_flops(batch, 32 * 8 * 8, 10, False))
    return Case("cnn", model, rng.standard_normal((batch, 3, 32, 32)).astype(np.float32),
                rng.integers(0, 10, batch), flops)


CASES = {"mlp": mlp_case, "cnn": cnn_case}


def torch_module(model: Any) -> torch.nn.Module:
    """The same layers in PyTorch, holding copies of `model`'s weights."""
    layers = []
    for layer in model:
        if isinstance(layer, nn.Linear):
            layers.append(torch.nn.Linear(layer.in_features, layer.out_features))
        elif isinstance(layer, nn.Conv2d):
            layers.append(torch.nn.Conv2d(layer.in_channels, layer.out_channels,
                                          layer.kernel_size, padding=layer.padding))
        elif isinstance(layer, nn.MaxPool2d):
            layers.append(torch.nn.MaxPool2d(2))
        else:
            layers.append({"ReLU": torch.nn.ReLU, "Flatten": torch.nn.Flatten}[
                type(layer).__name__]())
    module = torch.nn.Sequential(*layers)
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()})
    return module


def torch_step(module: torch.nn.Module, forward: Callable[..., Any], **adam: Any
               ) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """A PyTorch training step: zero the gradients, forward, backward, Adam, the loss."""
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3, **adam)

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = forward(x, y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def agreement(case: Case, step: Any, threads: int) -> float:
    """Relative error of Ember against eager PyTorch from the same weights: one SGD step
    (the loss and the gradients: parameters move by -lr * g) and the first call of the timed
    Adam step `step` (the update, in units of lr, where |g| > 100 eps: below that Adam's
    g / (|g| + eps) amplifies the rounding of the gradient). The weights are restored."""
    model, start = case.model, {k: v.copy() for k, v in case.model.state_dict().items()}
    xt, yt = torch.from_numpy(case.x), torch.from_numpy(case.y)
    errors = []
    for optimizer in ("sgd", "adam"):
        reference = torch_module(case.model)
        loss_fn = (lambda m: lambda x, y: torch.nn.functional.cross_entropy(m(x), y))(reference)
        if optimizer == "sgd":
            sgd = ember.optim.SGD(model.parameters(), lr=0.1)
            loss = ember.train_step(model, F.cross_entropy, sgd, case.x, case.y,
                                    threads=threads)(case.x, case.y)
            torch_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
        else:
            loss = step(case.x, case.y)
            torch_optimizer = torch.optim.Adam(reference.parameters(), lr=1e-3, foreach=True)
        torch_optimizer.zero_grad()
        expected = loss_fn(xt, yt)
        expected.backward()
        torch_optimizer.step()
        errors.append(abs(loss - expected.item()) / abs(expected.item()))
        for (name, value), param in zip(reference.state_dict().items(), reference.parameters(),
                                        strict=True):
            moved, mine = value.numpy() - start[name], model.state_dict()[name] - start[name]
            if optimizer == "sgd":
                errors.append(float(np.abs(mine - moved).max() / np.abs(moved).max()))
            else:
                clear = np.abs(param.grad.numpy()) > 100 * 1e-8
                errors.append(float(np.abs(mine - moved)[clear].max(initial=0.0) / 1e-3))
        model.load_state_dict(start)
    return max(errors)


def alternate(calls: dict[str, Callable[[], Any]], rounds: int, block: int, warmup: int
              ) -> dict[str, float]:
    """Median seconds per call of each entry. Each round runs every entry in turn: one untimed
    call, then `block` timed calls: the first call after another side ran (caches holding the
    other side's data, worker threads asleep) is not timed."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            call()
            for _ in range(block):
                start = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def peak_flops(threads: int) -> tuple[float, str]:
    """FLOP/s of the host's FMA units at `threads` threads, and how that was counted."""
    target = ember.Target.host()
    lanes = target.vector_bits // 32
    hertz = 0.0
    with open("/proc/cpuinfo", encoding="utf-8") as file:
        for line in file:
            if line.startswith("cpu MHz"):
                hertz = float(line.split(":")[1]) * 1e6
                break
    rate = target.fma_per_cycle * lanes * 2 * hertz * threads
    return rate, (f"{target.fma_per_cycle} FMA/cycle x {lanes} f32 lanes x 2 x "
                  f"{hertz / 1e9:.3f} GHz x {threads} thread(s) = {rate / 1e9:.1f} GFLOP/s")


def profile_top(step: Any, case: Case, count: int) -> str:
    """The `count` slowest kernels of Ember's step (per-kernel medians)."""
    lines = str(step.profile(case.x, case.y, runs=20)).splitlines()
    return "\n".join(lines[: count + 2])


def bench_case(case: Case, threads: int, rounds: int, block: int, warmup: int,
               compiled: bool, profile: int) -> bool:
    torch.set_num_threads(threads)
    xt, yt = torch.from_numpy(case.x), torch.from_numpy(case.y)
    params = sum(p.data.size for p in case.model.parameters())

    model, start = case.model, time.perf_counter()
    step = ember.train_step(model, F.cross_entropy, ember.optim.Adam(model.parameters(),
                                                                     lr=1e-3),
                            case.x, case.y, threads=threads)
    compile_seconds = time.perf_counter() - start
    error = agreement(case, step, threads)
    ok = error < 1e-4
    calls: dict[str, Callable[[], Any]] = {"ember": lambda: step(case.x, case.y)}
    for name, adam in (("torch foreach", {"foreach": True}), ("torch fused", {"fused": True})):
        module = torch_module(case.model)
        forward = (lambda m: lambda x, y: torch.nn.functional.cross_entropy(m(x), y))(module)
        run = torch_step(module, forward, **adam)
        calls[name] = (lambda r: lambda: r(xt, yt))(run)
    if compiled:
        module = torch_module(case.model)
        forward = torch.compile(lambda x, y: torch.nn.functional.cross_entropy(module(x), y))
        run = torch_step(module, forward, fused=True)
        calls["torch.compile"] = lambda: run(xt, yt)
    medians = alternate(calls, rounds, block, warmup)

    rate, rate_text = peak_flops(threads)
    compute = case.flops / rate
    memory = params * ADAM_BYTES_PER_PARAM / MEMORY_BANDWIDTH
    floor = compute
    saved = torch_saved_bytes(torch_module(case.model), xt, yt)
    print(f"\n{case.name}: batch {len(case.x)}, {params} parameters, "
          f"{case.flops / 1e6:.1f} MFLOP per step; {threads} thread(s); median of {rounds} "
          f"rounds x {block} calls; ember vs eager torch (an SGD and an Adam step): rel. error "
          f"{error:.1e}{'' if ok else '  FAIL'}")
    print(f"  {'':16} {'median ms':>10} {'ember/this':>11} {'floor/this':>11}")
    for name, seconds in medians.items():
        ratio = medians["ember"] / seconds
        print(f"  {name:16} {seconds * 1e3:10.3f} {ratio:10.2f}x {floor / seconds:10.0%}")
    print(f"  floor {floor * 1e3:.3f} ms of compute ({rate_text}); serial "
          f"{(compute + memory) * 1e3:.3f} ms with the Adam update's "
          f"{params * ADAM_BYTES_PER_PARAM / 1e6:.1f} MB at {MEMORY_BANDWIDTH / 1e9:.0f} GB/s "
          f"({memory * 1e3:.3f} ms)")
    print(f"  memory: ember keeps {step.kept_bytes / 1024:.1f} KiB for backward "
          f"({len(step.kept_for_backward())} values live across the loss) in an arena of "
          f"{step.exe.arena_bytes / 1024:.1f} KiB (compiled in {compile_seconds:.1f} s); torch "
          f"saves {saved / 1024:.1f} KiB for backward, plus {params * 4 / 1024:.1f} KiB of "
          "parameter gradients")
    if profile:
        print(profile_top(step, case, profile))
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    parser.add_argument("--only", default=",".join(CASES), help="models: " + ",".join(CASES))
    parser.add_argument("--rounds", type=int, default=10, help="rounds of blocks")
    parser.add_argument("--block", type=int, default=10, help="timed calls per side per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per side first")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="print Ember's N slowest kernels per model")
    parser.add_argument("--readme", action="store_true",
                        help=f"also write the output into {README.name}'s training table")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    ok = True
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        for threads in (int(t) for t in args.threads.split(",")):
            print(f"== {threads} thread(s) ==\n{machine_info(threads).line()}")
            for name in args.only.split(","):
                ember.manual_seed(0)
                case = CASES[name](np.random.default_rng(0))
                ok &= bench_case(case, threads, args.rounds, args.block, args.warmup,
                                 not args.no_compile, args.profile)
    if args.readme and ok:
        command = " ".join(["python benchmarks/bench_train.py",
                            *(argv if argv is not None else sys.argv[1:])])
        write_readme(command, tee.text())
    return 0 if ok else 1


README = Path(__file__).with_name("README.md")
BEGIN, END = "<!-- bench_train: begin -->", "<!-- bench_train: end -->"


class _Tee(io.TextIOBase):
    """Writes through to `stream` and keeps a copy."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.parts = stream, []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def text(self) -> str:
        return "".join(self.parts)


def write_readme(command: str, output: str) -> None:
    """Put this run's output between the README's bench_train markers."""
    text = README.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{README}: no {BEGIN} ... {END} section to write into")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    lines = [line for line in output.splitlines() if "loop not vectorized" not in line]
    block = f"{BEGIN}\n```\n$ {command}\n" + "\n".join(lines).strip() + f"\n```\n{END}"
    README.write_text(head + block + tail)
    print(f"wrote the table into {README}")


if __name__ == "__main__":
    sys.exit(main())
