"""`ember.train_step` against PyTorch: the same CNN (BatchNorm in training mode), the same
initial weights and batches, 25 steps of SGD (momentum, weight decay), Adam and AdamW: equal
loss curves, parameters and running statistics.

The convolutions before a BatchNorm have no bias: its gradient is zero up to rounding (the
normalization removes any per-channel shift), and Adam turns rounding noise into full-size
steps, so no two implementations agree on it."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember import nn
from ember.testing.torch_memory import torch_saved_bytes

torch = pytest.importorskip("torch")

STEPS = 25


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(12)
        self.fc = nn.Linear(12 * 2 * 2, 5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.avg_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(x.reshape(x.shape[0], -1))


def torch_net() -> torch.nn.Module:
    class TorchNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn1 = torch.nn.BatchNorm2d(8)
            self.conv2 = torch.nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=False)
            self.bn2 = torch.nn.BatchNorm2d(12)
            self.fc = torch.nn.Linear(12 * 2 * 2, 5)

        def forward(self, x):
            tf = torch.nn.functional
            x = tf.max_pool2d(tf.relu(self.bn1(self.conv1(x))), 2)
            x = tf.avg_pool2d(tf.relu(self.bn2(self.conv2(x))), 2)
            return self.fc(x.reshape(x.shape[0], -1))

    return TorchNet()


def batches(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    return [(rng.standard_normal((6, 3, 16, 16)).astype(np.float32),
             rng.integers(0, 5, 6)) for _ in range(count)]


OPTIMIZERS = {
    "sgd": (lambda p, m: m.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3)),
    "adam": (lambda p, m: m.Adam(p, lr=3e-3)),
    "adamw": (lambda p, m: m.AdamW(p, lr=3e-3, weight_decay=0.05)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_train_step_matches_pytorch(name: str) -> None:
    ember.manual_seed(3)
    model = Net()
    reference = torch_net()
    reference.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    make = OPTIMIZERS[name]
    opt = make(list(model.parameters()), ember.optim)
    topt = make(reference.parameters(), torch.optim)
    data = batches(STEPS)
    step = ember.train_step(model, F.cross_entropy, opt, *data[0])
    ours, theirs = [], []
    for x, y in data:
        ours.append(step(x, y))
        topt.zero_grad()
        loss = torch.nn.functional.cross_entropy(reference(torch.tensor(x)), torch.tensor(y))
        loss.backward()
        topt.step()
        theirs.append(loss.item())
    assert step.compiles == 1
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-5)
    expected = reference.state_dict()
    for key, value in model.state_dict().items():
        np.testing.assert_allclose(value, expected[key].numpy(), rtol=1e-3, atol=1e-5,
                                   err_msg=key)
    assert int(model.bn1.num_batches_tracked.data) == STEPS


def test_learning_rate_changes_without_recompiling() -> None:
    ember.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    reference = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    reference.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    opt = ember.optim.Adam(model.parameters(), lr=0.01)
    topt = torch.optim.Adam(reference.parameters(), lr=0.01)
    sched = ember.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    tsched = torch.optim.lr_scheduler.StepLR(topt, step_size=3, gamma=0.5)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y = rng.integers(0, 3, 5)
    step = ember.train_step(model, F.cross_entropy, opt, x, y)
    for _ in range(10):
        step(x, y)
        sched.step()
        topt.zero_grad()
        torch.nn.functional.cross_entropy(reference(torch.tensor(x)), torch.tensor(y)).backward()
        topt.step()
        tsched.step()
    assert step.compiles == 1
    for key, value in reference.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[key], value.numpy(), rtol=1e-4, atol=1e-6)


def test_dropout_draws_a_fresh_mask_each_step() -> None:
    ember.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.Dropout(0.5), nn.Linear(64, 1))
    opt = ember.optim.SGD(model.parameters(), lr=0.0)  # no update: only the mask changes
    x = np.ones((8, 16), np.float32)
    y = np.zeros((8, 1), np.float32)
    step = ember.train_step(model, F.mse_loss, opt, x, y, seed=5)
    losses = [step(x, y) for _ in range(4)]
    assert len(set(losses)) == 4
    again = ember.train_step(model, F.mse_loss, opt, x, y, seed=5)
    assert [again(x, y) for _ in range(4)] == losses


def test_kept_activations_are_no_more_than_pytorch_saves() -> None:
    """The BatchNorm CNN keeps across the loss no more bytes than PyTorch's autograd saves:
    BatchNorm's centred, normalized and activated values are recomputed in the backward pass
    from the convolution's output (`rematerialize`); the report lists what is kept."""
    ember.manual_seed(3)
    model = Net()
    reference = torch_net()
    reference.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    x, y = batches(1)[0]
    step = ember.train_step(model, F.cross_entropy, ember.optim.SGD(model.parameters(), lr=0.1),
                            x, y)
    saved = torch_saved_bytes(reference, torch.tensor(x), torch.tensor(y))
    kept = step.kept_for_backward()
    assert 0 < step.kept_bytes <= saved, (step.kept_bytes, saved)
    # the first convolution's output, which BatchNorm's backward reads, is among them
    assert any(value.type.shape == (6, 8, 16, 16) for value in kept)
    report = step.report()
    assert "kept for backward" in report and f"{len(kept)} values" in report


def test_rematerialize_lowers_what_is_kept() -> None:
    """Without the pass (the default pipeline alone) the same step keeps BatchNorm's
    intermediates too: the pass is what brings the bytes down, and the step still equals
    PyTorch's."""
    from ember.passes import default_pipeline
    from ember.passes.plan_memory import kept_across

    ember.manual_seed(3)
    x, y = batches(1)[0]
    model = Net()
    reference = torch_net()
    reference.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    step = ember.train_step(model, F.cross_entropy, ember.optim.SGD(model.parameters(), lr=0.1),
                            x, y)
    plain = ember.driver.compile_graph(step.traced_graph(), target=ember.Target.host(),
                                       passes=default_pipeline(3))
    kept_plain = sum(v.type.nbytes for v in kept_across(plain.graph, plain.graph.outputs[0]))
    assert step.kept_bytes * 2 < kept_plain, (step.kept_bytes, kept_plain)
    loss = step(x, y)
    topt = torch.optim.SGD(reference.parameters(), lr=0.1)
    expected = torch.nn.functional.cross_entropy(reference(torch.tensor(x)), torch.tensor(y))
    expected.backward()
    topt.step()
    assert abs(loss - expected.item()) <= 1e-4 * max(1.0, abs(loss))
    for key, value in reference.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[key], value.numpy(), rtol=1e-3,
                                   atol=1e-5, err_msg=key)
