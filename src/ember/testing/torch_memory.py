"""What PyTorch's autograd keeps for a training step's backward pass: the reference that
`ember.train_step`'s `kept_bytes` is compared with (tests/train, benchmarks/bench_train.py).

    saved = torch_saved_bytes(module, x, y)     # bytes, for cross_entropy(module(x), y)
"""

from __future__ import annotations

from typing import Any


def torch_saved_bytes(module: Any, x: Any, y: Any) -> int:
    """Bytes of the unique tensor storages that autograd saves for backward while computing
    `cross_entropy(module(x), y)`, the module's parameters and the batch excluded (every
    tensor a backward function keeps passes `saved_tensors_hooks`' pack hook). Runs the
    backward pass once and clears the gradients it made."""
    import torch

    excluded = {t.untyped_storage().data_ptr() for t in (*module.parameters(), x, y)}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = torch.nn.functional.cross_entropy(module(x), y)
    loss.backward()
    module.zero_grad(set_to_none=True)
    return sum(saved.values())
