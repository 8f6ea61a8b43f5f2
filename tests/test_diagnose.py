"""initkit.diagnose / diagnose_depth / lsuv_: the classic signal-propagation results."""

import importlib.util

import pytest
import torch
from torch import nn

import initkit
from initkit.model.diagnose import depth_mlp

# Width 64 keeps these fast; the effects are the same at any width.
SMALL = {"width": 64, "batch": 128}


def test_deep_tanh_net_normal_vanishes_and_xavier_is_healthy(backend):
    report = initkit.diagnose_depth(depth=50, activation="tanh", init=["normal", "xavier_normal"], **SMALL)
    normal, xavier = report.diagnoses["normal"], report.diagnoses["xavier_normal"]
    assert normal.vanishing and not normal.healthy
    assert xavier.healthy, str(xavier)
    # N(0, 0.05^2) with 64 inputs shrinks the signal by ~0.4 per layer; Xavier keeps it within 10x
    assert report.act_std["normal"][-1] < 1e-10
    assert report.act_std["xavier_normal"][-1] > 0.05
    text = str(report)
    assert "normal: vanishing" in text and "xavier_normal: healthy" in text
    assert len(text.splitlines()) >= 50


def test_zero_init_reports_the_symmetry_problem(backend):
    report = initkit.diagnose_depth(depth=20, activation="tanh", init="zeros", **SMALL)
    diagnosis = report.diagnoses["zeros"]
    assert diagnosis.symmetric and diagnosis.vanishing
    assert "all units identical" in str(report)


def test_deep_relu_net_kaiming_is_healthy_and_large_normal_explodes(backend):
    report = initkit.diagnose_depth(depth=30, activation="relu", init="kaiming_normal", **SMALL)
    assert report.diagnoses["kaiming_normal"].healthy
    report = initkit.diagnose_depth(depth=30, activation="relu", init="normal", normal_std=1.0, **SMALL)
    assert report.diagnoses["normal"].exploding


def test_diagnose_records_every_leaf_and_gradients(backend):
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    initkit.initialize(model, generator=torch.Generator().manual_seed(0))
    x = torch.randn(64, 8)
    diagnosis = initkit.diagnose(model, x)
    assert [layer.name for layer in diagnosis.layers] == ["0", "1", "2"]
    hidden = model[0](x).detach()
    assert diagnosis.layers[0].act_std == pytest.approx(float(hidden.std()), rel=1e-5)
    assert diagnosis.layers[0].act_mean == pytest.approx(float(hidden.mean()), rel=1e-4, abs=1e-6)
    assert all(layer.grad_std > 0 for layer in diagnosis.layers)
    assert diagnosis.output_grad_std == pytest.approx(1.0, rel=0.2)  # the N(0, 1) projection
    assert model[0].weight.grad is not None


def test_diagnose_under_another_default_device_draws_its_projection_on_the_cpu(backend):
    # a default device (cuda in use; meta stands in for it here) must not move the projection off
    # the CPU generator's device
    model = nn.Sequential(nn.Linear(8, 4))
    x = torch.randn(16, 8)
    expected = initkit.diagnose(model, x).output_grad_std
    with torch.device("meta"):
        assert initkit.diagnose(model, x).output_grad_std == expected


def _recorded(model, x):
    """Each leaf's output (cloned in the hook) and the gradient at it, the slow reference way."""
    outputs, grads = {}, {}
    handles = []
    for name, module in model.named_children():
        def hook(m, args, out, name=name):
            outputs[name] = out.detach().clone()
            out.register_hook(lambda g: grads.__setitem__(name, g.clone()))
        handles.append(module.register_forward_hook(hook))
    out = model(x)
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
    for handle in handles:
        handle.remove()
    return outputs, grads


@pytest.mark.parametrize("inplace", [False, True])
def test_diagnose_records_what_each_layer_produced_before_in_place_ops(backend, inplace):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(inplace=inplace), nn.Linear(16, 16), nn.ReLU(inplace=inplace))
    x = torch.randn(64, 8)
    reference = nn.Sequential(*[nn.ReLU() if isinstance(m, nn.ReLU) else m for m in model])  # no in-place op
    outputs, grads = _recorded(reference, x)
    diagnosis = initkit.diagnose(model, x)
    for layer in diagnosis.layers:
        # the Linear's statistics are pre-ReLU (mean near 0), not what ReLU(inplace=True) left in its tensor
        assert layer.act_mean == pytest.approx(float(outputs[layer.name].mean()), rel=1e-5, abs=1e-7), layer.name
        assert layer.act_std == pytest.approx(float(outputs[layer.name].std()), rel=1e-5), layer.name
        assert layer.grad_std == pytest.approx(float(grads[layer.name].std()), rel=1e-5), layer.name
    assert diagnosis.layers[0].act_mean < 0.1 < diagnosis.layers[1].act_mean


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is not None, reason="matplotlib installed")
def test_plot_without_matplotlib_says_so(tmp_path):
    with pytest.raises(ImportError, match="pip install matplotlib"):
        initkit.diagnose_depth(depth=3, init="xavier_normal", plot=tmp_path / "out.png", **SMALL)


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib not installed")
def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "out.png"
    initkit.diagnose_depth(depth=3, init="xavier_normal", plot=path, **SMALL)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lsuv_gives_unit_output_variance(backend):
    torch.manual_seed(0)
    model = depth_mlp(8, 32, "relu")
    batch = torch.randn(256, 32)
    initkit.lsuv_(model, batch, tol=0.05)
    variances = []
    linears = [m for m in model if isinstance(m, nn.Linear)]
    hooks = [m.register_forward_hook(lambda m, a, o: variances.append(float(o.var()))) for m in linears]
    with torch.no_grad():
        model(batch)
    for hook in hooks:
        hook.remove()
    assert len(variances) == 8 and all(abs(v - 1) < 0.05 for v in variances), variances


def _linear_output_variances(model, batch):
    variances = []
    hooks = [m.register_forward_hook(lambda m, a, o: variances.append(float(o.var())))
             for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        model(batch)
    for hook in hooks:
        hook.remove()
    return variances


def test_lsuv_measures_the_linear_output_before_an_in_place_relu(backend):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(inplace=True), nn.Linear(32, 32), nn.ReLU(inplace=True))
    batch = torch.randn(256, 32)
    initkit.lsuv_(model, batch, tol=0.05)
    # with ReLU(inplace=True) each Linear's output tensor is rewritten: measure on a copy without
    reference = nn.Sequential(*[nn.ReLU() if isinstance(m, nn.ReLU) else m for m in model])
    variances = _linear_output_variances(reference, batch)
    assert len(variances) == 2 and all(abs(v - 1) < 0.05 for v in variances), variances


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_lsuv_changes_only_weights_and_biases(backend, mode):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.0), nn.Linear(16, 4))
    model.train(mode == "train")
    model[3].eval()  # a mixed state, to be kept as it is
    flags = [m.training for m in model.modules()]
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    initkit.lsuv_(model, torch.randn(64, 8) * 3 + 1, generator=torch.Generator().manual_seed(0))
    assert [m.training for m in model.modules()] == flags
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name  # running_mean / running_var / num_batches_tracked
    assert not torch.equal(model[0].weight, torch.zeros_like(model[0].weight))


def test_diagnose_depth_batch_and_plot_path_are_checked_first(tmp_path):
    for batch in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch must be an int >= 1"):
            initkit.diagnose_depth(depth=3, width=8, batch=batch)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        initkit.diagnose_depth(depth=3, width=8, plot=tmp_path / "missing" / "p.png")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        initkit.diagnose_depth(depth=3, width=8, plot=tmp_path)


def test_bad_input():
    with pytest.raises(TypeError, match="expected an nn.Module"):
        initkit.diagnose(lambda x: x, torch.zeros(2))
    with pytest.raises(TypeError, match="inputs must be"):
        initkit.diagnose(nn.Linear(2, 2), [1.0, 2.0])
    with pytest.raises(ValueError, match="activation must be one of"):
        initkit.diagnose_depth(activation="sigmoid")
    with pytest.raises(ValueError, match="unknown init 'he'"):
        initkit.diagnose_depth(init="he")
    with pytest.raises(ValueError, match="depth"):
        initkit.diagnose_depth(depth=0)
    with pytest.raises(ValueError, match="max_iter"):
        initkit.lsuv_(nn.Linear(2, 2), torch.zeros(2, 2), max_iter=0)
    with pytest.raises(ValueError, match="max_iter"):
        initkit.lsuv_(nn.Linear(2, 2), torch.zeros(2, 2), max_iter=True)  # a bool is not a count
    with pytest.raises(RuntimeError):
        initkit.lsuv_(nn.Linear(2, 2), torch.zeros(2, 3))  # the batch does not fit the model


def _state(model):
    """Every parameter's and buffer's value and every module's training flag."""
    values = {name: t.detach().clone() for name, t in [*model.named_parameters(), *model.named_buffers()]}
    return values, [m.training for m in model.modules()]


def _assert_same_state(model, before):
    values, flags = _state(model)
    assert flags == before[1]
    assert values.keys() == before[0].keys()
    for name, value in values.items():
        assert torch.equal(value, before[0][name]), name


class _ZeroAfterFirst(nn.Module):
    """The second layer's input is all zeros: its output variance is 0 with its bias zeroed."""

    def __init__(self):
        super().__init__()
        self.a, self.norm, self.b = nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 8)

    def forward(self, x):
        return self.b(self.norm(self.a(x)) * 0)


@pytest.mark.parametrize(
    "batch, error, message",
    [
        (torch.randn(16, 5), RuntimeError, "cannot be multiplied"),  # the batch does not fit the model
        (torch.randn(16, 8), ValueError, "output variance of Linear is 0.0"),
        (torch.full((16, 8), float("nan")), ValueError, "output variance of Linear is nan"),
        ([torch.randn(16, 8)], TypeError, "batch must be a tensor or a tuple of tensors"),
    ],
)
def test_lsuv_failure_leaves_the_model_as_it_was(backend, batch, error, message):
    torch.manual_seed(0)
    model = _ZeroAfterFirst()
    model(torch.randn(16, 8) + 3)  # running statistics away from their reset values
    before = _state(model)
    with pytest.raises(error, match=message):
        initkit.lsuv_(model, batch)
    _assert_same_state(model, before)


@pytest.mark.parametrize("how", ["parametrizations", "hooks"])
def test_lsuv_refuses_a_computed_weight_before_any_change(backend, how):
    if how == "parametrizations":
        layer = nn.utils.parametrizations.weight_norm(nn.Linear(32, 32))
    else:
        with pytest.warns(FutureWarning):  # torch.nn.utils.weight_norm is deprecated, still used
            layer = nn.utils.weight_norm(nn.Linear(32, 32))
    model = nn.Sequential(layer, nn.Tanh(), nn.Linear(32, 32))
    before = _state(model)
    with pytest.raises(NotImplementedError, match="weight of layer '0' .* is computed from other tensors"):
        initkit.lsuv_(model, torch.randn(128, 32) * 10)
    _assert_same_state(model, before)


def test_diagnose_with_loss_fn_takes_outputs_that_are_not_tensors(backend):
    class DictOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.l = nn.Linear(3, 3)

        def forward(self, x):
            return {"out": self.l(x)}

    model = DictOut()
    diagnosis = initkit.diagnose(model, torch.randn(4, 3), loss_fn=lambda output: output["out"].sum())
    assert [layer.name for layer in diagnosis.layers] == ["l"] and diagnosis.layers[0].grad_std is not None
    assert model.l.weight.grad is not None
    with pytest.raises(TypeError, match="pass loss_fn"):
        initkit.diagnose(model, torch.randn(4, 3))
    with pytest.raises(TypeError, match="loss_fn must return a tensor, got float"):
        initkit.diagnose(model, torch.randn(4, 3), loss_fn=lambda output: 1.0)


def test_diagnose_leaves_buffers_as_they_were(backend):
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))  # train mode: the forward updates running stats
    before = _state(model)
    initkit.diagnose(model, torch.randn(32, 8) + 5)
    _assert_same_state(model, before)
