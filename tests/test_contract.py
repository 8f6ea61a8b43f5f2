"""The reproducibility contract, pinned: for a given (key, stream, offset) the fills give exactly
these values. A change of any value is a new contract version (initkit.init.CONTRACT_VERSION and
the README's reproducibility section say which, and what changed); this test then gets the new
values, and digests of 65536-value fills (six values can miss a last-bit change: version 4 kept
all six pinned values of every fill). Version 5: float64 normals on initkit's own log and sin/cos
(fdlibm kernels, integer angle reduction) instead of libm's (float64 normals and the float64
truncated normals drawn from them differ in the last bits; every other value is version 4's).
Version 4: the float log on a degree-6 polynomial (float32,
float16 and bfloat16 normals and truncated normals differ in the last bits; uniform and float64
values are version 3's). Version 3: float normals on fmaf (every float normal and truncated normal changed) and
rejection from acceptance 0.8 (the +-2 std truncated normal changed in every dtype); uniform and
float64 normal values are version 2's. Version 2: the truncated normal's narrow, far-tail and
far-from-the-mean intervals moved to exact rejection samplers (version 1 was wrong there)."""

import hashlib

import pytest
import torch

import initkit

SEED = torch.tensor(20261201)
STREAM, OFFSET = 1, 3
GOLDEN = {
    ("uniform_fill", (-1.0, 1.0), "float32"): ["0x1.a6f4600000000p-3", "-0x1.fcceb80000000p-2", "-0x1.1e2ab00000000p-1", "0x1.9b94c40000000p-1", "-0x1.ba09b00000000p-1", "0x1.bb51d40000000p-1"],
    ("uniform_fill", (-1.0, 1.0), "float64"): ["0x1.9b94c45445f64p-1", "0x1.bb51d40b687f6p-1", "-0x1.6da8476620b32p-1", "-0x1.fc2735d73b0f4p-1", "0x1.323e0d94115f2p-1", "0x1.fcfa36a56678cp-2"],
    ("normal_fill", (0.0, 1.0), "float32"): ["-0x1.f304aa0000000p-1", "0x1.391b400000000p-2", "0x1.a20bc00000000p+0", "0x1.a708180000000p-2", "0x1.8349b60000000p-3", "0x1.c879160000000p-3"],
    ("normal_fill", (0.0, 1.0), "float64"): ["-0x1.eb94c8788af65p-1", "0x1.db9a546e37f24p-3", "0x1.2a684b27dd918p-2", "0x1.0396a828cdbc7p+0", "-0x1.97996d741a646p+1", "0x1.6c670c5ba4991p-1"],
    ("trunc_normal_fill", (0.0, 0.02, -2.0, 2.0), "float32"): ["-0x1.3f5f240000000p-6", "0x1.90c6b80000000p-8", "0x1.0b8ca40000000p-5", "0x1.0ebd800000000p-7", "0x1.efba820000000p-9", "0x1.2424880000000p-8"],
    ("trunc_normal_fill", (0.0, 0.02, -2.0, 2.0), "float64"): ["-0x1.3a9ca942e84bcp-6", "0x1.3062c56542869p-8", "0x1.7df622c26349ap-8", "0x1.4c45f5f6c9e6fp-6", "-0x1.04dd12d9aa7dbp-4", "0x1.d26f6bfa6c491p-7"],
    ("trunc_normal_fill", (0.0, 1.0, -2.0, 2.0), "float32"): ["-0x1.f304aa0000000p-1", "0x1.391b400000000p-2", "0x1.a20bc00000000p+0", "0x1.a708180000000p-2", "0x1.8349b60000000p-3", "0x1.c879160000000p-3"],
    ("trunc_normal_fill", (0.0, 1.0, -2.0, 2.0), "float64"): ["-0x1.eb94c8788af65p-1", "0x1.db9a546e37f24p-3", "0x1.2a684b27dd918p-2", "0x1.0396a828cdbc7p+0", "-0x1.cf9f152009a23p+0", "0x1.6c670c5ba4991p-1"],
    ("trunc_normal_fill", (0.0, 1.0, -0.001, 0.001), "float32"): ["0x1.b11b000000000p-13", "-0x1.04826c0000000p-11", "-0x1.2508e60000000p-11", "0x1.a575880000000p-11", "-0x1.c4a5940000000p-11", "0x1.c5f5980000000p-11"],
    ("trunc_normal_fill", (0.0, 1.0, -0.001, 0.001), "float64"): ["0x1.a5758575040eap-11", "0x1.c5f5958cb4bbcp-11", "-0x1.766ee0aa1d638p-11", "-0x1.042ca6d4991e5p-10", "0x1.39979b375d908p-11", "0x1.0498af6f4f16ep-11"],
    ("trunc_normal_fill", (0.0, 1.0, 13.2, 14.2), "float32"): ["0x1.a79e460000000p+3", "0x1.a9ba060000000p+3", "0x1.aa0b3a0000000p+3", "0x1.a6a6160000000p+3", "0x1.acde580000000p+3", "0x1.a6913e0000000p+3"],
    ("trunc_normal_fill", (0.0, 1.0, 13.2, 14.2), "float64"): ["0x1.abf61db8ed451p+3", "0x1.acdd49dd224efp+3", "0x1.a6c5868a1083dp+3", "0x1.a668b8fc1b0c6p+3", "0x1.aa4043db036abp+3", "0x1.a9b6f603af67fp+3"],
}
# sha256 (first 16 hex digits) of the bytes of the same fills over 65536 elements.
DIGEST = {
    ("uniform_fill", (-1.0, 1.0), "float32"): "12a4715facb30b90",
    ("uniform_fill", (-1.0, 1.0), "float64"): "dcee22565213bc4b",
    ("normal_fill", (0.0, 1.0), "float32"): "803c2f95c6c640d7",
    ("normal_fill", (0.0, 1.0), "float64"): "025939ca1007a41e",
    ("trunc_normal_fill", (0.0, 0.02, -2.0, 2.0), "float32"): "ed5eb75c14a3095e",
    ("trunc_normal_fill", (0.0, 0.02, -2.0, 2.0), "float64"): "6dc161834d69f60d",
    ("trunc_normal_fill", (0.0, 1.0, -2.0, 2.0), "float32"): "c6f7d712f8f1b5a1",
    ("trunc_normal_fill", (0.0, 1.0, -2.0, 2.0), "float64"): "8e580c4d2170f02b",
    ("trunc_normal_fill", (0.0, 1.0, -0.001, 0.001), "float32"): "fb573a286f04552a",
    ("trunc_normal_fill", (0.0, 1.0, -0.001, 0.001), "float64"): "729014db04e346f3",
    ("trunc_normal_fill", (0.0, 1.0, 13.2, 14.2), "float32"): "3e0f4482cd11ca61",
    ("trunc_normal_fill", (0.0, 1.0, 13.2, 14.2), "float64"): "fd6f174c08dfd5a1",
}


def test_contract_version():
    assert initkit.init.CONTRACT_VERSION == 5


@pytest.mark.parametrize("op, params, dtype", list(GOLDEN))
def test_values_are_the_pinned_ones(ext, op, params, dtype):
    t = torch.empty(6, dtype=getattr(torch, dtype))
    getattr(torch.ops.initkit, op)(t, *params, SEED, STREAM, OFFSET)
    expected = torch.tensor([float.fromhex(h) for h in GOLDEN[op, params, dtype]], dtype=t.dtype)
    assert torch.equal(t, expected), (t.tolist(), expected.tolist())


@pytest.mark.parametrize("op, params, dtype", list(DIGEST))
def test_digests_are_the_pinned_ones(ext, op, params, dtype):
    t = torch.empty(1 << 16, dtype=getattr(torch, dtype))
    getattr(torch.ops.initkit, op)(t, *params, SEED, STREAM, OFFSET)
    assert hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16] == DIGEST[op, params, dtype]
