"""initkit.fuse: Linear followed by ReLU becomes FusedLinearReLU, outputs unchanged."""

import torch
import torch.nn.functional as F
from torch import nn

import initkit
from initkit.nn import FusedLinearReLU


def count(model, kind):
    return sum(type(m) is kind for m in model.modules())


def test_sequential(backend):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(inplace=True), nn.Linear(8, 2))
    fused = initkit.fuse(model)
    assert count(fused, FusedLinearReLU) == 2 and count(fused, nn.Linear) == 1
    assert count(model, FusedLinearReLU) == 0  # the original is untouched
    assert fused.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(3, 4)
    torch.testing.assert_close(fused(x), model(x))


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


def test_fx_traced_module(backend):
    torch.manual_seed(0)
    model = Block()
    fused = initkit.fuse(model)
    assert isinstance(fused.a, FusedLinearReLU) and isinstance(fused.c, FusedLinearReLU)
    assert type(fused.b) is nn.Linear
    assert fused.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(5, 4)
    torch.testing.assert_close(fused(x), model(x))


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 3), nn.ReLU())

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: FX cannot trace this
            return self.body(x)
        return -self.body(x)


def test_untraceable_model_keeps_sequential_fusions(backend):
    model = Untraceable()
    fused = initkit.fuse(model)
    assert isinstance(fused.body[0], FusedLinearReLU)
    x = torch.randn(2, 3)
    torch.testing.assert_close(fused(x), model(x))
