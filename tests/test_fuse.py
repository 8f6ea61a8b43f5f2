"""initkit.fuse: Linear followed by ReLU becomes FusedLinearReLU where that provably changes
nothing (outputs, gradients, state_dict, buffers, hooks, train/eval behaviour); elsewhere the pair
stays unfused and the report says why."""

import io
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initkit
from initkit.nn import FusedLinearReLU


def count(model, kind):
    return sum(type(m) is kind for m in model.modules())


def assert_same_behaviour(fused, model, x, modes=(True, False)):
    """Same outputs, input gradients and parameter gradients as `model`, in each train/eval mode."""
    for training in modes:
        fused.train(training)
        model.train(training)
        results = []
        for m in (model, fused):
            xi = x.clone().requires_grad_()
            m.zero_grad()
            out = m(xi)
            out.sum().backward()
            results.append((out.detach(), xi.grad, {n: p.grad for n, p in m.named_parameters()}))
        (out, grad, pgrads), (fout, fgrad, fpgrads) = results
        torch.testing.assert_close(fout, out)
        torch.testing.assert_close(fgrad, grad)
        assert fpgrads.keys() == pgrads.keys()
        for name in pgrads:
            torch.testing.assert_close(fpgrads[name], pgrads[name], msg=name)


def test_sequential(backend):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(inplace=True), nn.Linear(8, 2))
    fused, report = initkit.fuse(model, report=True)
    assert count(fused, FusedLinearReLU) == 2 and count(fused, nn.Linear) == 1
    assert count(model, FusedLinearReLU) == 0  # the original is untouched
    assert fused.state_dict().keys() == model.state_dict().keys()
    assert report.fused == [("0", "1"), ("2", "3")]
    assert report.skipped == {"4": "no ReLU that only it feeds, where fuse can see it"}
    assert_same_behaviour(fused, model, torch.randn(3, 4))


def test_nested_sequentials_are_called_as_a_whole(backend):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), nn.Linear(4, 3), nn.ReLU())
    fused, report = initkit.fuse(model, report=True)
    assert sorted(report.fused) == [("0.0", "0.1"), ("1", "2")]
    assert_same_behaviour(fused, model, torch.randn(5, 4))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(6, 6)
        self.c = nn.Linear(6, 3)
        self.inner = nn.Sequential(nn.Linear(3, 3), nn.ReLU())

    def forward(self, x):
        h = F.relu(self.a(x))
        skip = self.b(h)  # used twice: must stay unfused
        h = torch.relu(skip) + skip
        return self.inner(self.c(h).relu())


def test_module_with_its_own_forward(backend):
    torch.manual_seed(0)
    model = Block()
    fused, report = initkit.fuse(model, report=True)
    assert isinstance(fused.a, FusedLinearReLU) and isinstance(fused.c, FusedLinearReLU)
    assert isinstance(fused.inner[0], FusedLinearReLU)  # inner is only called as a whole
    assert type(fused.b) is nn.Linear
    assert dict(report.fused) == {"a": "torch.nn.functional.relu", "c": ".relu()", "inner.0": "inner.1"}
    assert report.skipped == {"b": "its output goes to something other than one ReLU in Block.forward"}
    assert type(fused) is Block and fused.state_dict().keys() == model.state_dict().keys()
    assert_same_behaviour(fused, model, torch.randn(5, 4))


class BranchReachesIntoSequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 3), nn.ReLU())

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow
            return self.body(x)
        return self.body[0](x)  # ... and in one branch the forward reaches into the Sequential


def test_sequential_reached_into_under_a_branch_is_left_unfused(backend):
    model = BranchReachesIntoSequential()
    fused, report = initkit.fuse(model, report=True)
    assert count(fused, FusedLinearReLU) == 0 and report.fused == []
    assert report.skipped["body.0"] == "BranchReachesIntoSequential.forward uses 'body' other than by calling it"
    for x in (torch.ones(2, 3), -torch.ones(2, 3)):  # both branches
        assert_same_behaviour(fused, model, x)


class IndexesSequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(3, 3), nn.ReLU())

    def forward(self, x):
        return self.seq(x) + self.seq[0](x)  # seq[0] must stay the plain Linear


class TapsFeatures(nn.Module):
    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU())

    def forward(self, x):
        features = []
        for layer in self.seq:  # pre-ReLU features must stay pre-ReLU
            x = layer(x)
            features.append(x)
        return torch.cat(features, dim=1)


class CallsFirstLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(3, 3), nn.ReLU())

    def forward(self, x):
        return self.seq[0](x)


@pytest.mark.parametrize("cls", [IndexesSequential, TapsFeatures, CallsFirstLayer])
def test_forward_reaching_into_a_sequential(backend, cls):
    torch.manual_seed(0)
    model = cls()
    fused, report = initkit.fuse(model, report=True)
    assert report.fused == [] and count(fused, FusedLinearReLU) == 0
    assert set(report.skipped) == {n for n, m in model.named_modules() if type(m) is nn.Linear}
    x = torch.randn(4, 3)
    assert torch.equal(fused(x), model(x))  # nothing fused: the very same ops
    assert_same_behaviour(fused, model, x)


class IteratesSequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU())

    def forward(self, x):
        for layer in self.seq:
            x = layer(x)
        return x


def test_iterated_sequential_fuses_in_the_graph(backend):
    torch.manual_seed(0)
    model = IteratesSequential()
    fused, report = initkit.fuse(model, report=True)
    assert report.fused == [("seq.0", "seq.1"), ("seq.2", "seq.3")] and report.skipped == {}
    assert_same_behaviour(fused, model, torch.randn(4, 3))


class TrainingBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.seq = nn.Sequential(nn.Linear(3, 3), nn.ReLU())

    def forward(self, x):
        h = self.seq(x)
        if self.training:
            return F.relu(self.a(h))
        return self.a(h)


@pytest.mark.parametrize("mode_at_fuse", ["train", "eval"])
def test_training_branch_is_not_frozen(backend, mode_at_fuse):
    torch.manual_seed(0)
    model = TrainingBranch().train(mode_at_fuse == "train")
    fused, report = initkit.fuse(model, report=True)
    assert report.skipped["a"] == "its output goes to something other than one ReLU in TrainingBranch.forward"
    assert report.fused == [("seq.0", "seq.1")]  # called as a whole in both modes
    assert_same_behaviour(fused, model, torch.randn(4, 3))


class WithState(nn.Module):
    """Parameters, buffers and submodules the forward never uses, a plain tensor attribute the
    forward reads and a plain attribute."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.unused = nn.Linear(2, 2)
        self.norm = nn.LayerNorm(4)
        self.register_buffer("steps", torch.tensor(7))
        self.register_buffer("cache", torch.ones(2), persistent=False)
        self.extra = nn.Parameter(torch.full((2,), 3.0))
        self.scale = torch.tensor(2.0)
        self.config = {"width": 4}

    def forward(self, x):
        return F.relu(self.a(x)) * self.scale


def test_state_dict_buffers_and_attributes_are_kept(backend):
    torch.manual_seed(0)
    model = WithState()
    fused, report = initkit.fuse(model, report=True)
    assert report.fused == [("a", "torch.nn.functional.relu")]
    assert list(fused.state_dict()) == list(model.state_dict())  # same keys, same order
    for name, value in model.state_dict().items():
        assert torch.equal(fused.state_dict()[name], value), name
    assert dict(fused.named_buffers()).keys() == {"steps", "cache"}  # scale stays a plain attribute
    assert type(fused) is WithState and torch.equal(fused.scale, model.scale)
    assert [n for n, _ in fused.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert fused.config == {"width": 4}
    fused.load_state_dict(model.state_dict())  # strict: every key matches
    assert_same_behaviour(fused, model, torch.randn(5, 3))
    buffer = io.BytesIO()  # the whole model pickles and loads
    torch.save(fused, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    x = torch.randn(2, 3)
    assert torch.equal(loaded(x), fused(x))
    assert list(loaded.state_dict()) == list(model.state_dict())


def _record(log, tag):
    def hook(module, args, output=None):
        log.append((tag, (output if output is not None else args[0]).detach().clone()))

    return hook


@pytest.mark.parametrize("kind", ["forward", "pre", "relu", "backward"])
@pytest.mark.parametrize("where", ["sequential", "graph"])
def test_hooks_are_kept(backend, kind, where):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)) if where == "sequential" else Block()
    linear, relu = (model[0], model[1]) if where == "sequential" else (model.inner[0], model.inner[1])
    log = []
    if kind == "forward":
        linear.register_forward_hook(_record(log, "out"))
    elif kind == "pre":
        linear.register_forward_pre_hook(_record(log, "in"))
    elif kind == "relu":
        relu.register_forward_hook(_record(log, "relu"))
    else:
        linear.register_full_backward_hook(lambda m, gin, gout: log.append(("grad", gout[0].clone())))
    fused, report = initkit.fuse(model, report=True)
    name = "0" if where == "sequential" else "inner.0"
    assert "hooks" in report.skipped[name] and name not in dict(report.fused)
    x = torch.randn(5, 3 if where == "sequential" else 4, requires_grad=True)
    model(x).sum().backward()
    expected, log[:] = list(log), []
    fused(x).sum().backward()
    assert [tag for tag, _ in log] == [tag for tag, _ in expected] and log
    for (_, got), (_, want) in zip(log, expected):
        torch.testing.assert_close(got, want)  # e.g. the Linear's hook sees its pre-ReLU output


def test_hooks_on_the_traced_model_itself_are_kept(backend):
    model = WithState()
    calls = []
    model.register_forward_hook(lambda m, args, out: calls.append("post"))
    model.register_forward_pre_hook(lambda m, args: calls.append("pre"))
    fused = initkit.fuse(model)
    assert isinstance(fused.a, FusedLinearReLU)
    fused(torch.randn(2, 3))
    assert calls == ["pre", "post"]


class HasBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.block(x))


def test_hooks_on_a_submodule_holding_fused_pairs_see_the_same_outputs(backend):
    torch.manual_seed(0)
    model = HasBlock()
    calls = []
    model.block.register_forward_hook(lambda m, args, out: calls.append(out.detach().clone()))
    fused, report = initkit.fuse(model, report=True)
    assert calls == []  # fuse runs no forward
    assert sorted(dict(report.fused)) == ["block.a", "block.c", "block.inner.0"]
    assert_same_behaviour(fused, model, torch.randn(3, 4))
    assert len(calls) == 4  # the hook ran in every forward of both models
    torch.testing.assert_close(calls[1], calls[0])


def test_global_hooks_prevent_fusion(backend):
    seen = []
    handle = nn.modules.module.register_module_forward_hook(lambda m, a, out: seen.append(type(m)))
    try:
        fused, report = initkit.fuse(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), report=True)
    finally:
        handle.remove()
    assert report.fused == [] and "global module hooks" in report.skipped["0"]
    assert count(fused, FusedLinearReLU) == 0


def test_parametrized_linear_is_not_fused(backend):
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    torch.nn.utils.parametrize.register_parametrization(model[0], "weight", nn.Identity())
    fused, report = initkit.fuse(model, report=True)
    assert report.fused == [] and count(fused, FusedLinearReLU) == 0
    assert list(fused.state_dict()) == list(model.state_dict())


def test_report_text(backend):
    _, report = initkit.fuse(Block(), report=True)
    text = str(report)
    assert "a" in text and "fused with torch.nn.functional.relu" in text
    assert "not fused: its output goes to something other than one ReLU" in text


def test_fused_model_runs_under_torchscript_and_export(backend):
    torch.manual_seed(0)
    x = torch.randn(4, 4)
    for model in (nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), Block()):
        fused = initkit.fuse(model).eval()
        torch.testing.assert_close(torch.jit.script(fused)(x), model(x))
        torch.testing.assert_close(torch.export.export(fused, (x,)).module()(x), model(x))


@pytest.mark.parametrize("bad", [None, 3, "model", [nn.Linear(2, 2)]])
def test_not_a_module_is_a_type_error(bad):
    with pytest.raises(TypeError, match="fuse: expected an nn.Module, got"):
        initkit.fuse(bad)


# The tester's cases: fuse must keep what the model's own forward does (its control flow, grad
# mode, autocast regions, optional arguments, side effects and other methods), not a trace of it.


def fuse_expecting(model, fused_pairs):
    """initkit.fuse(model, report=True), asserting which (Linear, ReLU) pairs it fused."""
    fused, report = initkit.fuse(model, report=True)
    assert report.fused == fused_pairs, report.skipped
    return fused, report


class OneLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)


class FrozenStem(nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(8, 8)
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        with torch.no_grad():  # a frozen feature extractor: no gradient may reach self.frozen
            x = self.frozen(x)
        return F.relu(self.fc(x))


def test_no_grad_region_in_forward_is_kept(backend):
    torch.manual_seed(0)
    model = FrozenStem()
    fused, _ = fuse_expecting(model, [("fc", "torch.nn.functional.relu")])
    assert_same_behaviour(fused, model, torch.randn(4, 8))
    assert fused.frozen.weight.grad is None and fused.fc.weight.grad is not None


class OptionalScale(OneLinear):
    def forward(self, x, scale=None):
        h = F.relu(self.fc(x))
        if scale is not None:
            h = h * scale
        return h


def test_optional_argument_is_kept(backend):
    torch.manual_seed(0)
    model = OptionalScale()
    fused, _ = fuse_expecting(model, [("fc", "torch.nn.functional.relu")])
    x = torch.randn(4, 8)
    torch.testing.assert_close(fused(x), model(x))
    torch.testing.assert_close(fused(x, scale=3.0), model(x, scale=3.0))


class AutocastRegion(OneLinear):
    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return F.relu(self.fc(x))


def test_autocast_region_in_forward_is_kept(backend):
    torch.manual_seed(0)
    model = AutocastRegion()
    fused, _ = fuse_expecting(model, [("fc", "torch.nn.functional.relu")])
    x = torch.randn(4, 8)
    out, fout = model(x), fused(x)
    assert fout.dtype == out.dtype == torch.bfloat16
    torch.testing.assert_close(fout, out, atol=1e-2, rtol=1e-2)  # bfloat16 GEMMs: 8-bit mantissa


class Branchy(nn.Module):
    """The head's use depends on a flag and the grad mode; the fused pair is in neither branch."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)
        self.use_head = True

    def forward(self, x):
        h = F.relu(self.fc(x))
        if torch.is_grad_enabled():
            h = h * 2
        return self.head(h) if self.use_head else h


def test_branches_are_taken_at_run_time(backend):
    torch.manual_seed(0)
    model = Branchy()
    fused, _ = fuse_expecting(model, [("fc", "torch.nn.functional.relu")])
    x = torch.randn(4, 8)
    assert_same_behaviour(fused, model, x)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x))
    model.use_head = fused.use_head = False
    assert fused(x).shape == model(x).shape == (4, 8)
    torch.testing.assert_close(fused(x), model(x))


class FlagRoutesOutput(OneLinear):
    """With the flag off, the Linear's output bypasses the ReLU: fusing it would be wrong then."""

    def __init__(self):
        super().__init__()
        self.activate = True

    def forward(self, x):
        h = self.fc(x)
        return F.relu(h) if self.activate else h


def test_linear_whose_output_a_branch_routes_past_the_relu_is_not_fused(backend):
    torch.manual_seed(0)
    model = FlagRoutesOutput()
    fused, report = fuse_expecting(model, [])
    assert type(fused.fc) is nn.Linear
    assert report.skipped == {"fc": "its output goes to something other than one ReLU in FlagRoutesOutput.forward"}
    model.activate = fused.activate = False
    x = torch.randn(4, 8)
    assert (model(x) < 0).any()  # the pre-ReLU output, negative entries included
    assert_same_behaviour(fused, model, x)


class Counts(OneLinear):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return F.relu(self.fc(x))


def test_side_effects_of_forward_run_and_fuse_runs_no_forward(backend):
    model = Counts()
    fused, _ = fuse_expecting(model, [("fc", "torch.nn.functional.relu")])
    assert model.calls == fused.calls == 0  # fuse did not call forward
    x = torch.randn(2, 8)
    fused(x)
    fused(x)
    assert fused.calls == 2 and model.calls == 0


class TwoStyles(nn.Module):
    """fc1 feeds a ReLU through a local name; fc2's pre-ReLU output is also read by features()."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 8)
        self.act = nn.ReLU()

    def forward(self, x):
        x = self.fc1(x)
        x = self.act(x)
        return torch.relu(self.fc2(x))

    def features(self, x):
        return self.fc2(F.relu(self.fc1(x)))


def test_other_methods_of_the_class_are_kept_and_read(backend):
    torch.manual_seed(0)
    model = TwoStyles()
    fused, report = initkit.fuse(model, report=True)
    assert type(fused) is TwoStyles
    assert report.fused == [("fc1", "act, torch.nn.functional.relu")] and type(fused.fc1) is FusedLinearReLU
    assert report.skipped == {"fc2": "its output goes to something other than one ReLU in TwoStyles.features"}
    x = torch.randn(4, 8)
    assert_same_behaviour(fused, model, x)
    assert (model.features(x) < 0).any()
    torch.testing.assert_close(fused.features(x), model.features(x))


class ReadInFinally(OneLinear):
    """`return F.relu(h)` gives h to the ReLU, but the finally block reads h after it: pre-ReLU."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        try:
            h = self.fc(x)
            return F.relu(h)
        finally:
            self.seen.append(h)


def test_linear_output_read_after_the_relu_returns_is_not_fused(backend):
    torch.manual_seed(0)
    model = ReadInFinally()
    fused, _ = fuse_expecting(model, [])
    assert type(fused.fc) is nn.Linear
    x = torch.randn(4, 8)
    assert_same_behaviour(fused, model, x)
    assert (model.seen[-1] < 0).any()
    torch.testing.assert_close(fused.seen[-1].detach(), model.seen[-1].detach())


class InPlaceReLU(OneLinear):
    def forward(self, x):
        return F.relu(self.fc(x), inplace=True)


def test_in_place_relu_in_a_forward_is_not_fused(backend):
    torch.manual_seed(0)
    model = InPlaceReLU()
    fused, report = fuse_expecting(model, [])
    assert type(fused.fc) is nn.Linear
    assert "in place" in report.skipped["fc"]
    assert_same_behaviour(fused, model, torch.randn(4, 8))


class ByName(OneLinear):
    def forward(self, x):
        return F.relu(self.fc(x))

    def tap(self, x):
        return getattr(self, "fc")(x)


class ByChildren(ByName):
    def tap(self, x):
        return next(iter(self.children()))(x)


class ByList(ByName):
    def __init__(self):
        super().__init__()
        self.taps = [self.fc]  # a plain list: not a submodule

    def tap(self, x):
        return self.taps[0](x)


class Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = ByName()

    def forward(self, x):
        return self.inner(x)

    def tap(self, x):
        return self.inner.fc(x)


@pytest.mark.parametrize("cls", [ByName, ByChildren, ByList, Holder])
def test_linear_reached_where_fuse_cannot_follow_is_not_fused(backend, cls):
    torch.manual_seed(0)
    model = cls()
    fused, report = fuse_expecting(model, [])
    assert count(fused, FusedLinearReLU) == 0, report.skipped
    x = torch.randn(4, 8)
    assert (model.tap(x) < 0).any()
    torch.testing.assert_close(fused.tap(x), model.tap(x))
    assert_same_behaviour(fused, model, x)


def test_hook_that_calls_a_submodule_prevents_fusion_below_it(backend):
    torch.manual_seed(0)
    model = ByName()
    log = []
    model.register_forward_hook(lambda module, args, out: log.append(module.fc(args[0]).detach()))
    fused, _ = fuse_expecting(model, [])
    x = torch.randn(4, 8)
    model(x)
    fused(x)
    assert (log[0] < 0).any()
    torch.testing.assert_close(log[1], log[0])


class Unpicklable(nn.Module):
    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
        self.lock = threading.Lock()

    def forward(self, x):
        return self.seq(x)


def test_a_model_that_cannot_be_copied_is_a_clear_error():
    model = Unpicklable()
    with pytest.raises(TypeError, match=r"fuse: cannot copy the model \(TypeError: cannot pickle"):
        initkit.fuse(model)
    assert type(model.seq[0]) is nn.Linear  # left as it was
