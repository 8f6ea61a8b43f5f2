"""The float64 normal's own log and sin/cos (common/fill_math.h: fdlibm kernels with an integer
angle reduction, not libm's), checked value by value against an exact evaluation (mpmath, at
80 digits) of Box-Muller on the documented Philox words: element 2p+0 / 2p+1 of group p is
sqrt(-2 log u) cos / sin (2 pi t), u = (words 0:1 >> 11) 2^-53 + 2^-54 (in double), t = words 2:3 / 2^64."""

import mpmath
import pytest
import torch

from philox_reference import element_words

EPS = 2.0**-52


def exact_pair(words):
    # u as the fill computes it (the sum rounds to double above 1/2): part of the contract
    u = mpmath.mpf((((words[0] << 32) | words[1]) >> 11) * 2.0**-53 + 2.0**-54)
    t = mpmath.mpf((words[2] << 32) | words[3]) / mpmath.mpf(2) ** 64
    radius = mpmath.sqrt(-2 * mpmath.log(u))
    return radius, radius * mpmath.cos(2 * mpmath.pi * t), radius * mpmath.sin(2 * mpmath.pi * t)


@pytest.mark.parametrize("stream,offset", [(0, 0), (5, 2**40 + 6)])
def test_float64_normal_is_box_muller_within_two_ulps_of_the_radius(ext, stream, offset):
    seed, pairs = 0x5EED_1234_ABCD, 4000
    t = torch.empty(2 * pairs, dtype=torch.float64)
    torch.ops.initkit.normal_fill(t, 0.0, 1.0, torch.tensor(seed), stream, offset)
    got = t.tolist()
    worst = 0.0
    with mpmath.workdps(80):
        for p in range(pairs):
            words, _ = element_words(seed, stream, offset + 2 * p, per_group=2)
            radius, x0, x1 = exact_pair(words)
            for value, exact in ((got[2 * p], x0), (got[2 * p + 1], x1)):
                worst = max(worst, float(abs(mpmath.mpf(value) - exact) / radius) / EPS)
    # The angle is reduced to 2^-52 of a quarter turn (0.35 ulp of the radius at most), then the
    # log, sqrt, polynomial and final products each add about half an ulp.
    assert worst <= 2.0, f"worst error {worst:.2f} ulp of the radius"


def test_float64_normal_tails_and_moments(ext):
    # 2^20 values: the law itself (the KS tests in test_init_distributions cover the body).
    t = torch.empty(2**20, dtype=torch.float64)
    torch.ops.initkit.normal_fill(t, 0.0, 1.0, torch.tensor(7))
    n = t.numel()
    assert abs(t.mean().item()) < 5 / n**0.5
    assert abs(t.var().item() - 1) < 5 * (2 / n) ** 0.5
    for z, p in ((3.0, 2.6997960632601913e-3), (4.0, 6.334248366623996e-5)):
        observed = (t.abs() > z).sum().item()
        assert abs(observed - n * p) < 5 * (n * p) ** 0.5 + 1
