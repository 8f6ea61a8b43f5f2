"""initkit.summary / count_parameters / param_report against hand counts."""

import pytest
import torch
from torch import nn

import initkit


def _mlp():
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2))


def test_mlp_summary_numbers(backend):
    model = _mlp()
    initkit.initialize(model, generator=torch.Generator().manual_seed(0))
    result = initkit.summary(model, input_size=(2, 4))
    # 4*5+5 + 5*3+3 + 3*2+2 = 25 + 18 + 8
    assert (result.total_params, result.trainable_params, result.non_trainable_params) == (51, 51, 0)
    assert result.output_shape == [2, 2]
    assert result.total_mult_adds == 2 * (4 * 5 + 5 * 3 + 3 * 2)  # batch 2; bias adds are not mult-adds
    leaves = [layer for layer in result.layers if layer.depth == 1]
    assert [layer.num_params for layer in leaves] == [25, 0, 18, 0, 8]
    assert [layer.output_shape for layer in leaves] == [[2, 5], [2, 5], [2, 3], [2, 3], [2, 2]]
    assert [layer.mult_adds for layer in leaves] == [40, 0, 30, 0, 12]
    assert result.param_bytes == 51 * 4
    assert result.activation_bytes == (10 + 10 + 6 + 6 + 4) * 4  # every leaf output, float32
    assert result.input_bytes == 8 * 4
    text = str(result)
    assert "Total params: 51" in text and "[2, 2]" in text and "Total mult-adds: 82" in text
    assert "├─Linear: 1-1" in text


def test_init_column_compares_measured_and_expected_std(backend):
    model = _mlp()
    plan = initkit.initialize(model)
    first = initkit.summary(model).layers[1]
    assert first.expected_std == pytest.approx(plan.row("0.weight").std)
    assert first.init_std == pytest.approx(float(model[0].weight.detach().std()))
    assert f"{first.init_std:.4f} ({first.expected_std:.4f})" in str(initkit.summary(model))


class _Convnet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8 * 6 * 6, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def test_conv_and_nested_depth(backend):
    model = _Convnet()
    result = initkit.summary(model, input_size=(2, 3, 8, 8), depth=1)
    conv, bn, head = 3 * 8 * 9 + 8, 2 * 8, 8 * 36 * 10 + 10
    assert result.total_params == conv + bn + head
    conv_mult_adds = 2 * 8 * 6 * 6 * (3 * 9)
    assert result.total_mult_adds == conv_mult_adds + 2 * 288 * 10
    assert result.buffer_bytes == (8 + 8) * 4 + 8  # running mean/var float32, num_batches_tracked int64
    assert torch.equal(model.features[1].running_mean, torch.zeros(8)) and model.training  # state untouched
    text = str(result)
    assert "Conv2d" not in text  # depth=1 shows `features` as one row with its total
    assert f"{conv + bn:,}" in text


def test_tied_and_frozen_parameters_counted_once():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False), nn.Linear(10, 3))
    model[1].weight = model[0].weight
    model[2].bias.requires_grad_(False)
    assert initkit.count_parameters(model) == (40 + 33, 40 + 30)
    result = initkit.summary(model, input_size=(2, 5), dtypes=[torch.long])
    assert (result.total_params, result.trainable_params, result.non_trainable_params) == (73, 70, 3)
    assert result.output_shape == [2, 5, 3]
    assert result.param_bytes == 73 * 4
    rows = {layer.name: layer for layer in result.layers}
    assert rows["1"].tied and not rows["0"].tied
    assert rows["2"].trainable == "Partial"
    assert "40 (tied)" in str(result)


class _Functional(nn.Module):
    """A matmul written with @ on a bare parameter: FlopCounterMode still counts it."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 7))

    def forward(self, x):
        return torch.relu(x @ self.w)


def test_functional_ops_count_as_mult_adds():
    result = initkit.summary(_Functional(), input_size=(3, 6))
    assert result.total_mult_adds == 3 * 6 * 7
    assert result.total_params == 42


@pytest.mark.parametrize("layers, bidirectional", [(1, False), (2, True)])
def test_lstm_mult_adds(layers, bidirectional):
    # per step and direction: x @ W_ih (4H x I) and h @ W_hh (4H x H); a bidirectional layer feeds 2H to the next
    steps, batch, inputs, hidden = 5, 2, 4, 8
    model = nn.LSTM(inputs, hidden, num_layers=layers, bidirectional=bidirectional)
    directions = 2 if bidirectional else 1
    widths = [inputs] + [directions * hidden] * (layers - 1)
    expected = sum(steps * batch * directions * 4 * hidden * (width + hidden) for width in widths)
    assert initkit.summary(model, input_size=(steps, batch, inputs)).total_mult_adds == expected


def test_meta_model_summary_without_storage():
    with torch.device("meta"):
        model = _mlp()
    result = initkit.summary(model, input_size=(2, 4))
    assert (result.total_params, result.output_shape, result.total_mult_adds) == (51, [2, 2], 82)
    assert all(layer.init_std is None for layer in result.layers)


class _CountsCalls(nn.Module):
    """A forward that updates a buffer whatever the mode (a step counter, an EMA)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, x):
        self.calls += 1
        return self.lin(x)


def test_summary_leaves_buffers_as_they_were():
    model = nn.Sequential(_CountsCalls(), nn.BatchNorm1d(4)).train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    result = initkit.summary(model, input_size=(8, 4))
    assert result.output_shape == [8, 4] and model.training and torch.is_grad_enabled()
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())
    initkit.init_plan(model)  # its fx trace runs forward's Python too
    assert torch.equal(model[0].calls, before["0.calls"])


@pytest.mark.parametrize("input_size", [None, (8, 4)])
def test_summary_does_not_run_spectral_norms_power_iteration(input_size):
    model = nn.utils.parametrizations.spectral_norm(nn.Linear(4, 4)).train()
    model.parametrizations.weight[0]._u.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))  # one iteration moves it
    before = {name: value.clone() for name, value in model.state_dict().items()}
    initkit.summary(model, input_size=input_size)
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())


def test_no_input_means_no_forward():
    result = initkit.summary(_mlp())
    assert result.total_params == 51 and result.output_shape is None and result.total_mult_adds == 0


def test_param_report():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    model[0].bias.requires_grad_(False)
    report = initkit.param_report(model)
    names = [entry[0] for entry in report.state_dict]
    assert names == list(model.state_dict())
    assert ("1.running_var", [2], torch.float32, torch.device("cpu")) in report.state_dict
    name, requires_grad, mean, variance = report.parameters[0]
    assert (name, requires_grad) == ("0.weight", True)
    assert mean == pytest.approx(float(model[0].weight.detach().double().mean()))
    assert variance == pytest.approx(float(model[0].weight.detach().double().var()))
    assert report.parameters[1][:2] == ("0.bias", False)
    assert "num_batches_tracked" in str(report) and "int64" in str(report)


def test_param_report_of_a_complex_parameter():
    model = nn.Module()
    model.z = nn.Parameter(torch.tensor([1 + 1j, 3 + 3j], dtype=torch.complex64))
    (_, _, mean, variance), = initkit.param_report(model).parameters
    assert (mean, variance) == (2 + 2j, 4.0)  # variance: (|-1-1j|^2 + |1+1j|^2) / (2 - 1)
    assert "2+2j" in str(initkit.param_report(model))


def test_summary_bad_input():
    with pytest.raises(ValueError, match=r"forward pass failed for inputs of shape \[\[2, 7\]\]"):
        initkit.summary(_mlp(), input_size=(2, 7))
    with pytest.raises(TypeError, match="expected an nn.Module"):
        initkit.summary([1, 2])
    with pytest.raises(TypeError, match="input_size must be"):
        initkit.summary(_mlp(), input_size=(2, "4"))
    with pytest.raises(ValueError, match="not both"):
        initkit.summary(_mlp(), input_size=(2, 4), input_data=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="depth"):
        initkit.summary(_mlp(), depth=-1)
    with pytest.raises(TypeError, match="expected an nn.Module"):
        initkit.count_parameters(None)


@pytest.mark.parametrize(
    ("input_size", "error"),
    [
        (5, TypeError),
        (2.0, TypeError),
        ("2, 4", TypeError),
        ({2: 4}, TypeError),
        ((2, True), TypeError),
        ([(2, 4), 5], TypeError),
        ((2, -4), ValueError),
        ([(2, 4), (1, -1)], ValueError),
    ],
)
def test_summary_input_size_says_what_it_must_be(input_size, error):
    with pytest.raises(error, match=r"input_size must be a shape \(a tuple of non-negative ints, e\.g\. \(2, 4\)\)"):
        initkit.summary(_mlp(), input_size=input_size)


def test_summary_input_too_large_to_allocate(backend):
    with pytest.raises(RuntimeError, match=r"cannot allocate an input of shape \[99999999999, 4\] \(1\.6e\+03 GB"):
        initkit.summary(_mlp(), input_size=(99999999999, 4))
    with pytest.raises(RuntimeError, match=r"cannot allocate an input of shape \[4611686018427387904, 4\]"):
        initkit.summary(_mlp(), input_size=(2**62, 4))  # the byte count overflows int64
