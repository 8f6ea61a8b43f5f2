"""Sharded init (DTensor, FSDP2, tensor parallel): every shard equals its part of the unsharded
fill, bit for bit. Real process groups (gloo, world sizes 2 and 4, tests/sharded_worker.py) and a
simulation of 1024-rank and 32x32 meshes in one process."""

import itertools
import math
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.distributed.tensor import Replicate, Shard
from torch.distributed.tensor.placement_types import _StridedShard

import initkit
from initkit import sharded
from initkit._ext.fill_ops import FILL_OPS

WORKER = Path(__file__).with_name("sharded_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("world", [2, 4])
def test_every_placement_equals_the_unsharded_fill(ext, world, tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INITKIT_BACKEND")}
    env["OMP_NUM_THREADS"] = "1"
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), str(rank), str(world), str(port)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
        for rank in range(world)
    ]  # fmt: skip
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
        lines = out.strip().splitlines()
        failed = [line for line in lines if " FAIL" in line]
        assert len(lines) > 150 and not failed, failed[:10]


def _simulate(global_shape, mesh_shape, placements, kind, params, dtype=torch.float32):
    """Fill every shard of a mesh as its rank would, into one tensor; return it and the unsharded fill."""
    seed = torch.tensor(1234)
    whole = torch.full(global_shape, float("nan"), dtype=dtype)
    covered = torch.zeros(global_shape, dtype=torch.int32)
    for coordinate in torch.cartesian_prod(*(torch.arange(n) for n in mesh_shape)).reshape(-1, len(mesh_shape)).tolist():
        ranges = sharded.shard_ranges(global_shape, mesh_shape, coordinate, placements)
        local = torch.empty([sum(n for _, n in dim) for dim in ranges], dtype=dtype)
        sharded.fill_shard(local, global_shape, ranges, kind, params, seed, stream=3)
        replicated = any(isinstance(p, Replicate) for p in placements)
        for where, offset in sharded.blocks(ranges):
            block = tuple(slice(o, o + w.stop - w.start) for o, w in zip(offset, where))
            if replicated and not torch.isnan(whole[block]).all():
                assert torch.equal(whole[block], local[where])  # replicas agree
            whole[block] = local[where]
            covered[block] += 1
    reference = torch.empty(global_shape, dtype=dtype)
    getattr(torch.ops.initkit, FILL_OPS[kind])(reference, *params, seed, 3, 0)
    return whole, reference, covered


@pytest.mark.parametrize(
    "global_shape, mesh_shape, placements",
    [
        ((50257, 768), (1024,), [Shard(0)]),  # GPT-2's token embedding over 1024 ranks (uneven, some empty)
        ((3072, 768), (1024,), [Shard(1)]),  # a GPT-2 MLP weight, row-wise tensor parallel
        ((1024, 2048), (32, 32), [Shard(0), Shard(1)]),  # 2-D mesh
        ((1000, 999), (32, 32), [Shard(1), Shard(0)]),  # uneven, in the other order
        ((96, 80), (32, 32), [Shard(0), Shard(0)]),  # one dim cut twice (nested chunks)
        ((1000, 96), (8, 16), [_StridedShard(0, split_factor=16), Shard(0)]),  # FSDP2 over colwise TP, uneven
        ((37, 5, 3), (4, 3), [_StridedShard(1, split_factor=3), Shard(1)]),  # 3-D, a dim smaller than the mesh
        ((70, 30), (2, 3, 2), [_StridedShard(0, split_factor=2), Shard(1), Shard(0)]),  # HSDP-like 3-D mesh
    ],
)
@pytest.mark.parametrize("kind, params", [("normal", (0.0, 0.02)), ("trunc_normal", (0.0, 1.0, -2.0, 2.0))])
def test_simulated_large_meshes_union_equals_the_unsharded_fill(ext, global_shape, mesh_shape, placements, kind, params):
    whole, reference, covered = _simulate(global_shape, mesh_shape, placements, kind, params)
    assert torch.equal(covered, torch.ones_like(covered))  # every element filled exactly once
    assert torch.equal(whole, reference)


def test_simulated_replicated_mesh_and_bfloat16(ext):
    whole, reference, _ = _simulate((256, 64), (8, 4), [Replicate(), Shard(1)], "uniform", (-1.0, 1.0), torch.bfloat16)
    assert torch.equal(whole, reference)


def _torch_shard(global_shape, mesh_shape, coordinate, placements):
    """The global indices of the elements a shard holds, as torch's own placements cut them."""
    local = torch.arange(math.prod(global_shape)).view(global_shape)
    for size, index, placement in zip(mesh_shape, coordinate, placements):
        if not isinstance(placement, Replicate):
            local = placement._split_tensor(local, size, with_padding=False, contiguous=True)[0][index]
    return local


def test_shard_ranges_are_torch_placements():
    # Random shapes (dims of 0 to 11, many smaller than the mesh), meshes of 1 to 3 dims, and
    # Shard / _StridedShard (split factors 1 to 4) / Replicate mixes, a dim cut several times.
    rng = random.Random(0)
    for _ in range(600):
        global_shape = tuple(rng.randint(0, 11) for _ in range(rng.randint(1, 3)))
        mesh_shape = tuple(rng.randint(1, 4) for _ in range(rng.randint(1, 3)))
        placements = [
            rng.choice([Replicate(), Shard(dim), _StridedShard(dim, split_factor=rng.randint(1, 4))])
            for dim in (rng.randrange(len(global_shape)) for _ in mesh_shape)
        ]
        whole = torch.arange(math.prod(global_shape)).view(global_shape)
        for coordinate in itertools.product(*(range(n) for n in mesh_shape)):
            ranges = sharded.shard_ranges(global_shape, mesh_shape, coordinate, placements)
            held = [[i for first, n in dim for i in range(first, first + n)] for dim in ranges]
            ours = whole[torch.meshgrid(*(torch.tensor(h, dtype=torch.long) for h in held), indexing="ij")]
            expected = _torch_shard(global_shape, mesh_shape, coordinate, placements)
            assert torch.equal(ours, expected), (global_shape, mesh_shape, placements, coordinate)


def test_chunk_extent_is_torch_chunk():
    for size in (0, 1, 7, 10, 64):
        for chunks in (1, 3, 4, 8, 16):
            lengths = [len(p) for p in torch.arange(size).chunk(chunks)] if size else []
            lengths += [0] * (chunks - len(lengths))  # torch.chunk may return fewer chunks: empty shards
            starts = [sum(lengths[:i]) for i in range(chunks)]
            got = [sharded.chunk_extent(size, chunks, i) for i in range(chunks)]
            assert [n for _, n in got] == lengths, (size, chunks)
            assert all(start == s for (start, n), s in zip(got, starts) if n), (size, chunks)


def test_unsupported_placement_names_it():
    class Fake:
        placements = (Shard(0), object())

    with pytest.raises(RuntimeError, match="placement <object"):  # as torch's in-place fills of a Partial DTensor
        sharded.check_placements(Fake())


BLOCKS = [
    ((10, 7, 5), (4, 3, 5), (6, 2, 0)),
    ((9, 11), (9, 4), (0, 7)),
    ((6,), (2,), (3,)),
    ((33, 17), (33, 1), (0, 16)),  # runs of one element (Shard(1) over more ranks than columns)
    ((5, 9, 3), (2, 1, 3), (1, 4, 0)),  # runs of 3, starting off the Philox groups
    ((7, 1030), (7, 1), (0, 1029)),  # the last column: uneven edge
    ((3, 40001), (3, 33003), (0, 1)),  # long runs cut into pieces, unaligned
    ((70013,), (70001,), (3,)),  # one long unaligned run
    ((), (), ()),  # a scalar
]
FILLS = [
    ("uniform", (-1.0, 1.0)),  # half-open after rounding to 16 bits
    ("normal", (0.5, 2.0)),
    ("trunc_normal", (0.0, 1.0, -1.5, 2.0)),  # rejection: normals outside are redrawn
    ("trunc_normal", (0.0, 1.0, 0.0, 0.5)),  # narrow: uniform proposals
    ("trunc_normal", (0.0, 1.0, 4.0, 9.0)),  # far tail: exponential proposals
]


@pytest.mark.parametrize("shape, local_shape, offset", BLOCKS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind, params", FILLS)
def test_fill_block_op_equals_the_block_of_the_unsharded_fill(ext, shape, local_shape, offset, dtype, kind, params):
    seed = torch.tensor(99)
    whole = torch.empty(shape, dtype=dtype)
    getattr(torch.ops.initkit, FILL_OPS[kind])(whole, *params, seed, 4, 0)
    expected = whole[tuple(slice(o, o + n) for o, n in zip(offset, local_shape))]
    ours = torch.empty(local_shape, dtype=dtype)
    sharded.fill_block(ours, shape, offset, kind, params, seed, 4)
    assert torch.equal(ours, expected)
    # A non-contiguous local tensor (every other element of a wider one) gets the same values.
    wide = torch.zeros((*local_shape[:-1], 2 * local_shape[-1]) if local_shape else (2,), dtype=dtype)
    strided = wide[..., ::2] if local_shape else wide[0]
    sharded.fill_block(strided, shape, offset, kind, params, seed, 4)
    assert torch.equal(strided, expected) and not wide[..., 1::2].any()


@pytest.mark.parametrize("shape, local_shape, offset", BLOCKS[:4])
def test_fill_block_op_equals_one_fill_per_run(ext, shape, local_shape, offset):
    # The CPU op and the per-run path other devices take give the same values.
    seed = torch.tensor(99)
    ours, runs = torch.empty(local_shape), torch.empty(local_shape)
    sharded.fill_block(ours, shape, offset, "trunc_normal", (0.0, 1.0, -2.0, 2.0), seed, 4)
    sharded.fill_runs(runs, shape, offset, "trunc_normal", (0.0, 1.0, -2.0, 2.0), seed, 4)
    assert torch.equal(ours, runs)


def test_fill_block_op_transposed_local_tensor(ext):
    seed = torch.tensor(5)
    whole = torch.empty(12, 40)
    torch.ops.initkit.normal_fill(whole, 0.0, 1.0, seed, 0, 0)
    local = torch.empty(13, 12).t()[:, 2:12]  # (12, 10), column-major and offset
    sharded.fill_block(local, (12, 40), (0, 30), "normal", (0.0, 1.0), seed, 0)
    assert torch.equal(local, whole[:, 30:])


def test_fill_shard_of_several_blocks_into_a_strided_local_tensor(ext):
    # A _StridedShard shard: rows 1, 2, 5, 6, 7 and columns 0, 1, 4 of the global tensor, in a
    # column-major local tensor; every block lands where torch's placement keeps it.
    seed = torch.tensor(8)
    whole = torch.empty(9, 6, dtype=torch.float64)
    torch.ops.initkit.trunc_normal_fill(whole, 0.0, 1.0, 0.0, 0.5, seed, 2, 0)
    local = torch.empty(3, 5, dtype=torch.float64).t()
    sharded.fill_shard(local, (9, 6), [[(1, 2), (5, 3)], [(0, 2), (4, 1)]], "trunc_normal", (0.0, 1.0, 0.0, 0.5), seed, 2)
    assert torch.equal(local, whole[[1, 2, 5, 6, 7]][:, [0, 1, 4]])


def test_fill_block_of_a_meta_shard_is_one_checking_call(ext):
    # a meta shard has nothing to write: one op call checks the parameters, not one call per row
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountInitkitCalls(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            CountInitkitCalls.calls += func.namespace == "initkit"
            return func(*args, **(kwargs or {}))

    local = torch.empty(1000, 3, device="meta")  # Shard(1) of a (1000, 6) tensor: 1000 runs
    with CountInitkitCalls():
        sharded.fill_block(local, (1000, 6), (0, 3), "normal", (0.0, 1.0), torch.tensor(1), 0)
    assert CountInitkitCalls.calls == 1
    with pytest.raises(RuntimeError, match="std >= 0"):
        sharded.fill_block(local, (1000, 6), (0, 3), "normal", (0.0, -1.0), torch.tensor(1), 0)


@pytest.mark.parametrize(
    "args, error, match",
    [
        (((4, 4), (0, 1)), ValueError, "outside the global size"),
        (((4,), (0,)), ValueError, "expected 2 global sizes"),
        (((4, 2), (-1, 0)), ValueError, "outside the global size"),
    ],
)
def test_fill_block_op_rejects_blocks_outside_the_tensor(ext, args, error, match):
    with pytest.raises(error, match=match):
        torch.ops.initkit._fill_block(torch.empty(4, 4), 1, [0.0, 1.0, 0.0, 0.0], torch.tensor(1), 0, *args)
