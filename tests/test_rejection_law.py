"""The CPU's batched rejection redraws (cpu/fill.cpp: redraw_outside; cpu/fill_simd.h: redraw_batch; gathered
counters, one queue across attempts) give exactly the per-element law of common/fill_sampler.h (sample_lanes<1>, what the
CUDA kernel runs): a small C++ program evaluates that law element by element from the shared
header, and its bits must equal the op's."""

import pathlib
import shutil
import subprocess

import numpy as np
import pytest
import torch

CSRC = pathlib.Path(__file__).resolve().parent.parent / "csrc" / "common"
PROGRAM = r"""
#include <cstdio>
#include <cstdlib>
#include "fill_sampler.h"
using namespace initkit;
int main(int argc, char** argv) {  // seed stream offset n mean std a b: one hex word per element
  const uint64_t seed = std::strtoull(argv[1], nullptr, 10);
  const uint64_t stream = std::strtoull(argv[2], nullptr, 10);
  const int64_t offset = std::atoll(argv[3]), n = std::atoll(argv[4]);
  const double p[4] = {std::atof(argv[5]), std::atof(argv[6]), std::atof(argv[7]), std::atof(argv[8])};
  const Sampler<float> s = make_sampler<float>(FillKind::TruncNormal, p);
  if (s.kind != FillKind::TruncNormalByRejection) return 3;
  const StreamKey key{uint32_t(seed), uint32_t(seed >> 32), uint32_t(stream), uint32_t(stream >> 32)};
  for (int64_t i = offset; i < offset + n; ++i) {
    const uint64_t group[1] = {uint64_t(i / 4)};
    const PhiloxWords b = block_words(key, group[0], 0);
    const uint32_t w[4][1] = {{b.w[0]}, {b.w[1]}, {b.w[2]}, {b.w[3]}};
    float out[4];
    sample_lanes<1>(s, key, group, w, out);
    std::printf("%08x\n", float_bits(out[i % 4]));
  }
}
"""


@pytest.fixture(scope="module")
def law_program(tmp_path_factory):
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the reference program")
    work = tmp_path_factory.mktemp("law")
    (work / "law.cpp").write_text(PROGRAM)
    # The build's numerics flags (csrc/build_config.txt): no contraction, so the bits are the kernel's.
    flags = ["-O1", "-std=c++20", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"]
    subprocess.run([compiler, *flags, f"-I{CSRC}", "law.cpp", "-o", "law"], cwd=work, check=True)
    return work / "law"


@pytest.mark.parametrize("bounds", [(-2.0, 2.0), (-1.3, 1.3), (-1.0, 2.5)])
@pytest.mark.parametrize("offset, shape", [(0, (40_000,)), (3, (40_000,)), (0, (200, 200))])
def test_batched_redraws_are_the_per_element_law(ext, law_program, bounds, offset, shape):
    seed, stream, n = 987654321, 5, 40_000
    t = torch.empty(shape).t() if len(shape) == 2 else torch.empty(shape)  # 2-D: strided, via the chunk buffer
    torch.ops.initkit.trunc_normal_fill(t, 0.0, 1.0, *bounds, torch.tensor(seed), stream, offset)
    run = subprocess.run([str(law_program), str(seed), str(stream), str(offset), str(n), "0", "1", *map(str, bounds)],
                         capture_output=True, text=True, check=True)
    expected = torch.from_numpy(np.array([int(h, 16) for h in run.stdout.split()], dtype=np.uint32).view(np.int32))
    got = t.contiguous().view(-1).view(torch.int32)
    assert torch.equal(got, expected), f"{(got != expected).sum().item()} of {n} values differ"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_bounds_no_normal_reaches_give_the_normal_fill(ext, dtype):
    # +-2 at std 0.02 is 100 std: make_sampler runs these as the normal fill (no bounds checks), which
    # is what rejection gives there, since no normal ever falls outside.
    seed = torch.tensor(424242)
    t = torch.empty(300, 333, dtype=dtype)
    torch.ops.initkit.trunc_normal_fill(t, 0.1, 0.02, -2.0, 2.0, seed, 2, 7)
    expected = torch.empty_like(t)
    torch.ops.initkit.normal_fill(expected, 0.1, 0.02, seed, 2, 7)
    assert torch.equal(t, expected)

