"""The fills are one in-place pass: no temporaries the size of the tensor."""

import pytest
from helpers import run_python

PEAK_RSS_CODE = """
import resource, torch, initkit
t = torch.empty(4096, 8192)          # 128 MiB
t.zero_()                            # touch every page before the baseline
initkit.{fn}(torch.empty(64, 64))    # load everything lazily initialized (threads, ISA dispatch)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
initkit.{fn}(t)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(after - before)                # KiB
"""


@pytest.mark.parametrize("fn", ["trunc_normal_", "normal_", "kaiming_uniform_"])
def test_fill_of_128_mib_adds_under_1_mib_of_peak_memory(ext, fn):
    out = run_python(PEAK_RSS_CODE.format(fn=fn))
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) < 1024
