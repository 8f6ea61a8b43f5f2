"""Fill speed: initkit vs torch.nn.init vs zero_ (the bandwidth floor) and raw Philox (the
generator floor) on the same tensor.

    pytest benchmarks/bench_init.py --benchmark-only --benchmark-group-by=group

Each group is one scheme on one shape, so its table compares like with like; `python -m initkit
bench` prints the same comparison as ratios. The call-overhead groups time each scheme on a 2x2
tensor, where the fill itself is nothing.
"""

import pytest
import torch

from initkit.bench import fills

SHAPE_IDS = ["x".join(map(str, s)) for s in fills.SHAPES]


@pytest.mark.parametrize("impl", fills.IMPLS)
@pytest.mark.parametrize("shape", fills.SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("scheme", list(fills.SCHEMES))
def test_fill(benchmark, scheme, shape, impl):
    tensor = torch.empty(shape)
    fn = fills.fill_callable(scheme, impl, tensor)
    benchmark.group = f"{scheme}-cpu-float32-{'x'.join(map(str, shape))}"
    benchmark.extra_info.update(torch=torch.__version__, threads=torch.get_num_threads(), bytes=tensor.nbytes)
    benchmark(fn)
    if impl not in ("zero_", "philox"):
        assert tensor.std() > 0  # checked once, outside the timed region


@pytest.mark.parametrize("impl", ["initkit", "torch"])
@pytest.mark.parametrize("scheme", list(fills.SCHEMES))
def test_call_overhead(benchmark, scheme, impl):
    """The per-call cost on a 2x2 tensor, where the fill itself is nothing (fills.overhead_rows)."""
    tensor = torch.empty(fills.OVERHEAD_SHAPE)
    benchmark.group = f"call-overhead-{scheme}-cpu-float32-{'x'.join(map(str, fills.OVERHEAD_SHAPE))}"
    benchmark.extra_info.update(torch=torch.__version__)
    benchmark(fills.fill_callable(scheme, impl, tensor))
