"""`ember.nn.Module` behaviour against PyTorch: names, state, modes, initialization, dropout."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember import nn

torch = pytest.importorskip("torch")


class Block:
    """Builds the same custom architecture from either library."""

    @staticmethod
    def build(lib: object) -> object:
        class Encoder(lib.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv = lib.Conv2d(3, 4, 3, bias=False)
                self.norm = lib.BatchNorm2d(4)
                self.scale = lib.Parameter(_as(lib, np.ones(4, np.float32)))
                self.head = lib.Sequential(lib.Flatten(), lib.Linear(4, 2))
                self.activation = lib.ReLU()
                self.width = 4  # a plain attribute is not state

            def forward(self, x):
                return self.head(self.activation(self.norm(self.conv(x))))

        class Model(lib.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embed = lib.Embedding(7, 3)
                self.encoder = Encoder()
                self.layers = lib.Sequential(
                    lib.Linear(3, 5),
                    lib.Sequential(lib.LayerNorm(5), lib.GELU(), lib.Linear(5, 5, bias=False)),
                    lib.Dropout(0.1),
                )
                self.bias = lib.Parameter(_as(lib, np.zeros(5, np.float32)))

        return Model()


def _as(lib: object, array: np.ndarray) -> object:
    return torch.from_numpy(array) if lib is torch.nn else array


def test_named_parameters_have_torch_names_and_order() -> None:
    ours = [name for name, _ in Block.build(nn).named_parameters()]
    theirs = [name for name, _ in Block.build(torch.nn).named_parameters()]
    assert ours == theirs
    assert "encoder.scale" in ours and "layers.1.2.weight" in ours


def test_state_dict_keys_order_and_shapes_equal_torch() -> None:
    ours = Block.build(nn).state_dict()
    theirs = Block.build(torch.nn).state_dict()
    assert list(ours) == list(theirs)
    assert {k: v.shape for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert "encoder.norm.num_batches_tracked" in ours
    assert ours["encoder.norm.num_batches_tracked"].dtype == np.int64


def test_batch_norm_state_dict_matches_torch_exactly() -> None:
    ours, theirs = nn.BatchNorm2d(3).state_dict(), torch.nn.BatchNorm2d(3).state_dict()
    assert list(ours) == list(theirs) == [
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name].numpy())
        assert ours[name].dtype == theirs[name].numpy().dtype


def test_named_buffers_and_modules_match_torch() -> None:
    ours, theirs = Block.build(nn), Block.build(torch.nn)
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]


def test_shared_module_is_listed_once_but_saved_under_every_name() -> None:
    def build(lib):
        shared = lib.Linear(3, 3)
        return lib.Sequential(shared, lib.ReLU(), shared)

    ours, theirs = build(nn), build(torch.nn)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})


def test_non_persistent_buffer_is_not_in_state_dict() -> None:
    class WithBuffers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("kept", np.ones(2))
            self.register_buffer("scratch", np.zeros(2), persistent=False)

    module = WithBuffers()
    assert list(module.state_dict()) == ["kept"]
    assert [n for n, _ in module.named_buffers()] == ["kept", "scratch"]


def test_state_dict_returns_copies() -> None:
    layer = nn.Linear(2, 2)
    state = layer.state_dict()
    state["weight"][...] = 42.0
    assert not np.any(layer.weight.data == 42.0)


# -- load_state_dict -------------------------------------------------------------------------


def test_load_state_dict_reports_missing_keys() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm2d(3))
    state = model.state_dict()
    del state["0.bias"], state["1.running_var"]
    with pytest.raises(ember.EmberError, match=r"missing key\(s\) in state_dict: 0\.bias, "
                                               r"1\.running_var"):
        model.load_state_dict(state)


def test_load_state_dict_reports_unexpected_keys() -> None:
    model = nn.Linear(2, 3)
    state = dict(model.state_dict(), extra=np.zeros(1))
    with pytest.raises(ember.EmberError, match=r"unexpected key\(s\) in state_dict: extra") as info:
        model.load_state_dict(state)
    assert "Linear" in str(info.value) and "missing" not in str(info.value)


def test_load_state_dict_reports_wrong_shape_and_changes_nothing() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    before = model.state_dict()
    state = {name: value + 1 for name, value in before.items()}
    state["1.weight"] = np.zeros((2, 3), np.float32)
    with pytest.raises(ember.EmberError, match=r"size mismatch for 1\.weight: the checkpoint has "
                                               r"shape \[2, 3\], the model has shape \[1, 3\]"):
        model.load_state_dict(state)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_load_state_dict_not_strict_returns_the_mismatched_keys() -> None:
    model = nn.Linear(2, 3)
    weight = np.arange(6, dtype=np.float32).reshape(3, 2)
    result = model.load_state_dict({"weight": weight, "other": np.zeros(1)}, strict=False)
    assert result.missing_keys == ["bias"] and result.unexpected_keys == ["other"]
    np.testing.assert_array_equal(model.weight.data, weight)
    with pytest.raises(ember.EmberError, match="size mismatch for weight"):
        model.load_state_dict({"weight": np.zeros((2, 2))}, strict=False)


def test_load_state_dict_accepts_torch_tensors_and_does_not_alias_them() -> None:
    torch_layer = torch.nn.Linear(3, 2)
    layer = nn.Linear(3, 2)
    layer.load_state_dict(torch_layer.state_dict())
    with torch.no_grad():
        torch_layer.weight.fill_(7.0)
    assert not np.any(layer.weight.data == 7.0)
    assert layer.weight.dtype == np.float32


# -- modes, assignment ------------------------------------------------------------------------


def test_train_and_eval_propagate_to_every_descendant() -> None:
    model = Block.build(nn)
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.layers.train()
    assert model.layers[2].training and not model.encoder.norm.training
    model.train()
    assert all(m.training for m in model.modules())


def test_assigning_an_array_to_a_parameter_is_an_error() -> None:
    layer = nn.Linear(2, 2)
    with pytest.raises(ember.EmberError, match="cannot assign a ndarray to parameter 'weight'"):
        layer.weight = np.zeros((2, 2))
    layer.bias = None
    assert [n for n, _ in layer.named_parameters()] == ["weight"]


def test_user_array_given_to_parameter_is_not_modified() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    saved = array.copy()
    layer = nn.Linear(3, 2)
    layer.weight = nn.Parameter(array)
    layer.load_state_dict({"weight": np.ones((2, 3)), "bias": np.ones(2)})
    x = np.ones((1, 3), np.float32)
    ember.compile(layer, x, opt_level=0)(x)
    np.testing.assert_array_equal(array, saved)
    array[0, 0] = 100.0
    assert layer.weight.data[0, 0] == 1.0


def test_sequential_indexing_and_slicing_like_torch() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert isinstance(model[-1], nn.Linear) and len(model) == 3
    tail = model[1:]
    assert isinstance(tail, nn.Sequential)
    assert list(tail.state_dict()) == ["2.weight", "2.bias"]  # PyTorch keeps the names


# -- dropout -----------------------------------------------------------------------------------


def test_dropout_is_identity_in_eval() -> None:
    x = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    model = nn.Sequential(nn.Dropout(0.5)).eval()
    np.testing.assert_array_equal(ember.compile(model, x, opt_level=0)(x), x)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_dropout_in_training_zeroes_about_p_and_scales_the_rest(p: float) -> None:
    x = np.random.default_rng(1).uniform(1.0, 2.0, size=(200, 100)).astype(np.float32)
    out = ember.compile(nn.Dropout(p), x, opt_level=0)(x)
    dropped = out == 0
    assert abs(dropped.mean() - p) < 0.02  # 20000 draws: the std of the mean is < 0.004
    np.testing.assert_allclose(out[~dropped], x[~dropped] / (1 - p), rtol=1e-6)


def test_dropout_p_outside_unit_interval_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"between 0 and 1, but got 1\.5"):
        nn.Dropout(1.5)


# -- initialization ----------------------------------------------------------------------------


@pytest.mark.parametrize(("layer", "fan_in"), [
    (lambda: nn.Linear(300, 200), 300),
    (lambda: nn.Conv2d(16, 64, 3), 16 * 9),
    (lambda: nn.Conv2d(16, 64, (3, 5), groups=4), 4 * 15),
])
def test_linear_and_conv_init_is_uniform_within_one_over_sqrt_fan_in(layer, fan_in: int) -> None:
    ember.manual_seed(0)
    module = layer()
    bound = 1 / np.sqrt(fan_in)
    for param in (module.weight.data, module.bias.data):
        assert param.dtype == np.float32
        assert np.abs(param).max() <= bound
    weight = module.weight.data.ravel().astype(np.float64)
    # U(-b, b): mean 0, std b/sqrt(3), quartiles at -b/2 and b/2.
    assert abs(weight.mean()) < 0.05 * bound
    assert abs(weight.std() - bound / np.sqrt(3)) < 0.05 * bound
    np.testing.assert_allclose(np.quantile(weight, [0.25, 0.75]), [-bound / 2, bound / 2],
                               atol=0.05 * bound)
    assert np.abs(weight).max() > 0.95 * bound


def test_embedding_init_is_standard_normal() -> None:
    ember.manual_seed(1)
    weight = nn.Embedding(1000, 64).weight.data.astype(np.float64)
    assert abs(weight.mean()) < 0.02 and abs(weight.std() - 1.0) < 0.02
    assert abs(np.mean(np.abs(weight) < 1.0) - 0.6827) < 0.01  # one-sigma mass of N(0, 1)


def test_norm_layers_init_to_identity_like_torch() -> None:
    for ours, theirs in [(nn.LayerNorm(4), torch.nn.LayerNorm(4)),
                         (nn.BatchNorm2d(4), torch.nn.BatchNorm2d(4))]:
        for name, value in theirs.state_dict().items():
            np.testing.assert_array_equal(ours.state_dict()[name], value.numpy())


def test_manual_seed_makes_init_reproducible() -> None:
    def build() -> nn.Module:
        return nn.Sequential(nn.Conv2d(2, 3, 3), nn.Linear(4, 5), nn.Embedding(6, 2))

    ember.manual_seed(123)
    first = build().state_dict()
    second = build().state_dict()
    ember.manual_seed(123)
    again = build().state_dict()
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["0.weight"], second["0.weight"])
