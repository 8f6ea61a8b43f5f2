"""Distribution tests: every fill and scheme against its exact law, on both backends.

KS tests use 1e6 samples (the tests seed torch, so each run is deterministic; p > 1e-3 is a
check that the law is right, not a coin flip). The KS statistic at n = 1e6 resolves CDF errors
of about 2e-3, far coarser than float32's 2^-24 quantization, so continuous CDFs are exact here.
"""

import math

import pytest
import torch
from scipy import stats

import initkit
from helpers import skip_torch_2_11_sampler

N = 1_000_000
P_MIN = 1e-3


def ks_pvalue(tensor, cdf):
    sample = tensor.detach().double().flatten().numpy()
    return stats.kstest(sample, cdf).pvalue


def fresh(shape=(1000, 1000), dtype=torch.float32):
    torch.manual_seed(1234)
    return torch.empty(shape, dtype=dtype)


def test_uniform_ks(backend):
    t = initkit.uniform_(fresh(), -0.5, 2.0)
    assert t.min() >= -0.5 and t.max() < 2.0
    assert ks_pvalue(t, stats.uniform(loc=-0.5, scale=2.5).cdf) > P_MIN


def test_normal_ks(backend):
    t = initkit.normal_(fresh(), 0.3, 2.0)
    assert ks_pvalue(t, stats.norm(loc=0.3, scale=2.0).cdf) > P_MIN


@pytest.mark.parametrize(
    "mean,std,a,b",
    [
        (0.0, 1.0, -2.0, 2.0),  # the default: by rejection (acceptance 0.954)
        (0.0, 1.0, -1.3, 1.3),  # acceptance 0.81, just above the rejection threshold: many redraws
        (0.0, 1.0, -1.0, 1.5),  # acceptance 0.77: the inverse CDF
        (0.5, 2.0, -1.0, 4.0),  # asymmetric
        (0.0, 1.0, 3.0, 4.0),  # both bounds in the upper tail
        (0.0, 1.0, -8.0, -6.0),  # deep lower tail: needs an exact inverse CDF, not a clamp
        (0.0, 0.02, -2.0, 2.0),  # bounds at 100 std: sampled by rejection from the normal
        (0.0, 1.0, -2.6, 2.6),  # acceptance 0.9907: rejection with ~1% of elements redrawn
    ],
)
@pytest.mark.filterwarnings("ignore:mean is more than 2 std")
def test_trunc_normal_ks(backend, mean, std, a, b):
    if b < -5 or a > 5:
        skip_torch_2_11_sampler(backend, "trunc_normal_ in a deep tail")
    t = initkit.trunc_normal_(fresh(), mean, std, a, b)
    assert t.min() >= a and t.max() <= b
    law = stats.truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std)
    assert ks_pvalue(t, law.cdf) > P_MIN


@pytest.mark.parametrize("a,b", [(-2.6, 2.6), (-1.0, 1.5)])  # rejection / inverse-CDF paths
def test_trunc_normal_float64_ks(backend, a, b):
    t = initkit.trunc_normal_(fresh(dtype=torch.float64), 0.0, 1.0, a, b)
    assert t.min() >= a and t.max() <= b
    assert ks_pvalue(t, stats.truncnorm(a, b).cdf) > P_MIN


def test_trunc_normal_small_std_has_no_outliers(backend):
    # torch <= 2.11 clamped erfinv's infinities to the bounds: 1000-sigma outliers at +-2.
    skip_torch_2_11_sampler(backend, "trunc_normal_ at a small std")
    t = initkit.trunc_normal_(fresh((4096, 1024)), std=0.002)
    x = t.double()
    assert (x.abs() > 0.002 * 7).sum() == 0  # P(|z| > 7) * 4M elements ~ 1e-5
    assert x.std().item() == pytest.approx(0.002, rel=2e-3)  # sd of the sample sd: 1/sqrt(2n) ~ 3.5e-4
    kurtosis = ((x - x.mean()) ** 4).mean() / x.var() ** 2
    assert kurtosis.item() == pytest.approx(3.0, abs=0.03)  # sd of sample kurtosis: sqrt(24/n) ~ 2.4e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_trunc_normal_reduced_precision_moments(backend, dtype):
    # bf16 trunc_normal_ used to leave 0.4% of values stuck at -2 (pytorch #145498).
    skip_torch_2_11_sampler(backend, "16-bit trunc_normal_")
    t = initkit.trunc_normal_(fresh((1000, 1000), dtype), std=0.01).double()
    assert t.mean().item() == pytest.approx(0.0, abs=5e-5)  # 5 sd of the mean
    assert t.std().item() == pytest.approx(0.01, rel=5e-3)  # bf16 rounding adds ~1e-5 relative variance
    assert (t.abs() > 0.08).sum() == 0


SCHEMES = [
    # name, call, law of one element given the (fan_in, fan_out) of a (250, 400) tensor
    ("xavier_uniform_", lambda t: initkit.xavier_uniform_(t, gain=2.0), lambda fi, fo: stats.uniform(-2 * math.sqrt(6 / (fi + fo)), 4 * math.sqrt(6 / (fi + fo)))),
    ("xavier_normal_", lambda t: initkit.xavier_normal_(t), lambda fi, fo: stats.norm(0, math.sqrt(2 / (fi + fo)))),
    ("kaiming_uniform_", lambda t: initkit.kaiming_uniform_(t, nonlinearity="relu"), lambda fi, fo: stats.uniform(-math.sqrt(6 / fi), 2 * math.sqrt(6 / fi))),
    ("kaiming_normal_", lambda t: initkit.kaiming_normal_(t, mode="fan_out", nonlinearity="relu"), lambda fi, fo: stats.norm(0, math.sqrt(2 / fo))),
    ("lecun_uniform_", lambda t: initkit.lecun_uniform_(t), lambda fi, fo: stats.uniform(-math.sqrt(3 / fi), 2 * math.sqrt(3 / fi))),
    ("lecun_normal_", lambda t: initkit.lecun_normal_(t), lambda fi, fo: stats.truncnorm(-2, 2, scale=math.sqrt(1 / fi) / 0.87962566103423978)),
    ("variance_scaling_avg_normal", lambda t: initkit.variance_scaling_(t, 2.0, "fan_avg", "normal"), lambda fi, fo: stats.norm(0, math.sqrt(2.0 / ((fi + fo) / 2)))),
]


@pytest.mark.parametrize("name,call,law", SCHEMES, ids=[s[0] for s in SCHEMES])
def test_scheme_ks(backend, name, call, law):
    t = call(fresh((4000, 250)))  # fan_in = 250, fan_out = 4000
    assert ks_pvalue(t, law(250, 4000).cdf) > P_MIN


def test_lecun_normal_variance_is_one_over_fan_in(backend):
    # The JAX correction makes the *truncated* samples' variance exactly 1 / fan_in.
    t = initkit.lecun_normal_(fresh((4000, 250)))
    assert t.double().var().item() == pytest.approx(1 / 250, rel=5e-3)  # sd of sample variance ~ 1.5e-3 rel


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fill", ["uniform", "normal", "trunc_normal"])
def test_every_dtype_moments(backend, dtype, fill):
    if dtype == torch.bfloat16:
        skip_torch_2_11_sampler(backend, f"bfloat16 {fill}_")
    t = fresh((1000, 1000), dtype)
    if fill == "uniform":
        initkit.uniform_(t, -1.0, 1.0)
        mean, var = 0.0, 1 / 3
    elif fill == "normal":
        initkit.normal_(t, 1.0, 0.5)
        mean, var = 1.0, 0.25
    else:
        initkit.trunc_normal_(t)
        mean, var = 0.0, 0.87962566103423978**2
    x = t.double()
    assert x.mean().item() == pytest.approx(mean, abs=5 * math.sqrt(var / N))
    assert x.var().item() == pytest.approx(var, rel=0.01)  # 1% >> sd of sample variance (~0.15%) + rounding
    assert torch.isfinite(x).all()
