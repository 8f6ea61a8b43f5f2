"""The one timing helper of initkit's benchmarks (`initkit bench`, benchmarks/, the GPU report).

Implementations compared in a row are timed round-robin in one loop, so a load change on a shared
machine hits all of them alike; each number is the median over rounds of the mean time of a block
of back-to-back calls (blocks of about 2 ms, so short calls are not dominated by timer overhead and
host overhead only counts where it exceeds the work, as in a real loop).
"""

import statistics
import time
from collections.abc import Callable


def median_seconds(
    fns: dict[str, Callable[[], object]],
    budget_s: float = 0.5,
    min_rounds: int = 5,
    max_rounds: int = 200,
    sync: Callable[[], object] | None = None,
    block_s: float = 2e-3,
) -> dict[str, float]:
    """Median seconds per call of each fn, timed round-robin for about `budget_s` seconds.

    `sync` (e.g. torch.cuda.synchronize) runs before and after every timed block, so
    asynchronous work is counted. Every fn runs once first (warm-up: page faults, lazy init).
    `block_s`: the length of a timed block. On a loaded CPU, blocks much shorter than the
    scheduler's time slice (e.g. 2e-4) keep most blocks free of preemption, which is what makes
    the median robust: with 2 ms blocks and load ~10 on 2 cores, the demo's fused/eager ratio
    ranged 0.4x-3.4x over runs; with 0.2 ms blocks 1.03x-1.29x (both batch sizes).
    """
    sync = sync or (lambda: None)
    for fn in fns.values():
        fn()
    sync()
    start = time.perf_counter()
    next(iter(fns.values()))()
    sync()
    single = max(time.perf_counter() - start, 1e-7)
    inner = max(1, int(block_s / single))
    rounds = max(min_rounds, min(max_rounds, int(budget_s / (single * inner * len(fns)))))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            sync()
            times[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(samples) for name, samples in times.items()}
