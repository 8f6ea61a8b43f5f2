"""Sharded init speed: one rank's fill of its shard of a 4096x16384 float32 weight vs the unsharded
fill / R, for simulated world sizes R (the shard a rank of an R-rank mesh holds, filled in this one
process, so the machine's cores do not blur the per-rank cost). Target: <= 1.1 x unsharded / R + 50 us."""

import torch
from torch.distributed.tensor import Shard

from .. import sharded
from .timing import median_seconds

SHAPE = (4096, 16384)
WORLDS = (1, 8, 64, 1024)


def rows(budget_s: float = 0.5) -> list[dict]:
    seed = torch.tensor(7)
    whole = torch.empty(SHAPE)
    unsharded = median_seconds({"whole": lambda: torch.ops.initkit.normal_fill(whole, 0.0, 0.02, seed)}, budget_s)["whole"]
    table = []
    for placement in (Shard(0), Shard(1)):
        for world in WORLDS:
            ((where, offset),) = sharded.blocks(sharded.shard_ranges(SHAPE, (world,), (world // 2,), [placement]))
            local = torch.empty([w.stop - w.start for w in where])
            t = median_seconds({"shard": lambda: sharded.fill_block(local, SHAPE, offset, "normal", (0.0, 0.02), seed, 0)}, budget_s)
            target = 1.1 * unsharded / world + 50e-6
            table.append({"placement": repr(placement), "world": world, "shard_us": t["shard"] * 1e6,
                          "ideal_us": unsharded / world * 1e6, "target_us": target * 1e6, "meets": t["shard"] <= target})  # fmt: skip
    return table


def format_rows(table: list[dict]) -> str:
    lines = ["Sharded fill of one rank's shard of a 4096x16384 float32 weight (normal), simulated world sizes:",
             f"{'placement':<14}{'world':>7}{'shard us':>12}{'unsharded/R us':>16}{'target us':>12}  meets"]  # fmt: skip
    for r in table:
        lines.append(f"{r['placement']:<14}{r['world']:>7}{r['shard_us']:>12.1f}{r['ideal_us']:>16.1f}{r['target_us']:>12.1f}  {r['meets']}")
    return "\n".join(lines)
