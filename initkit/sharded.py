"""Sharded fills: each rank fills only its shard of a DTensor, with exactly the values of that part
of the unsharded fill, for any mesh, number of ranks and Shard / _StridedShard / Replicate placement.

An element's value depends only on (key, stream, logical index in the GLOBAL tensor). A shard is
one block of the global tensor (Shard, Replicate) or several (_StridedShard: a dim holds several
index ranges); each block is cut into runs that are contiguous in the global row-major order, and each
run is filled by the fill op with `offset` = the global index of its first element. Shard(0) (FSDP2)
is one run per rank; Shard(d > 0) (tensor parallel row-wise, 2-D meshes) is one run per row of the
dims before d. On CPU the runs are cut and filled in C++ (one _fill_block op call, one parallel
region); on other devices each run is one fill op call (on meta, one call checks the parameters).
The key is drawn on every rank and then broadcast from mesh coordinate 0, so every rank fills with
the same key (equal to what a single process seeded the same way draws).
"""

import itertools
import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from ._ext.backend import EXT_DTYPES, backend
from ._ext.fill_ops import FILL_KINDS, FILL_OPS, op_params, op_seed

try:  # torch.distributed may be built out
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor, Replicate, Shard
    from torch.distributed.tensor.placement_types import _StridedShard
except ImportError:  # pragma: no cover
    DTensor = None


def is_dtensor(tensor) -> bool:
    return DTensor is not None and isinstance(tensor, DTensor)


def handles(tensor) -> bool:
    """Whether the sharded path fills `tensor`: a DTensor of a dtype the kernels take, on the
    extension backend (the torch backend, and other dtypes, leave DTensors to torch's own fills:
    each rank then draws its own values)."""
    return is_dtensor(tensor) and tensor.dtype in EXT_DTYPES and backend() == "ext"


def check_placements(tensor: "DTensor") -> None:
    """RuntimeError, as torch's in-place fills of a DTensor raise, for placements with no shard of
    the global values (Partial)."""
    for placement in tensor.placements:
        if not isinstance(placement, (Replicate, Shard, _StridedShard)):
            raise RuntimeError(
                f"initkit: cannot fill a DTensor with placement {placement!r} (placements {tuple(tensor.placements)}); "
                "supported: Shard(dim), _StridedShard(dim) and Replicate"
            )


def chunk_extent(size: int, chunks: int, index: int) -> tuple[int, int]:
    """(start, length) of chunk `index` of `chunks` along a dim of `size`, as torch.chunk cuts it
    (and DTensor's Shard): chunks of ceil(size / chunks), the last ones shorter or empty."""
    step = -(-size // chunks) if chunks else 0
    start = min(index * step, size)
    return start, max(0, min(step, size - start))


Ranges = list[tuple[int, int]]  # (global start, length) of the index ranges a dim holds, in local order


def _take(ranges: Ranges, start: int, length: int) -> Ranges:
    """Local positions [start, start + length) of a dim that holds `ranges`, as global ranges."""
    taken: Ranges = []
    for first, count in ranges:
        if length <= 0:
            break
        if start >= count:
            start -= count
            continue
        n = min(count - start, length)
        taken.append((first + start, n))
        start, length = 0, length - n
    return taken


def _merged(ranges: Ranges) -> Ranges:
    """`ranges` with neighbours that continue each other joined (fewer, longer blocks to fill)."""
    merged: Ranges = []
    for first, count in ranges:
        if merged and merged[-1][0] + merged[-1][1] == first:
            merged[-1] = (merged[-1][0], merged[-1][1] + count)
        elif count:
            merged.append((first, count))
    return merged


def shard_ranges(
    global_shape: Sequence[int], mesh_shape: Sequence[int], coordinate: Sequence[int], placements
) -> list[Ranges]:
    """Per tensor dim, the global index ranges the shard at mesh `coordinate` holds, in local order.
    Placements apply in mesh-dim order, each cutting what the dim holds so far (DTensor's rule):
    Shard(d) keeps its torch.chunk chunk; _StridedShard(d, split_factor=f) (FSDP2 over tensor
    parallel) cuts the dim into f chunks, each of those into the mesh dim's chunks, and keeps its
    chunk of each, in order. Pure arithmetic, so that any mesh can be simulated in one process."""
    ranges = [[(0, n)] if n else [] for n in global_shape]
    for size, index, placement in zip(mesh_shape, coordinate, placements):
        if not isinstance(placement, (Shard, _StridedShard)):
            continue
        held = ranges[placement.dim]
        total = sum(n for _, n in held)
        if isinstance(placement, _StridedShard):  # (before Shard: older torch derives it from Shard)
            kept: Ranges = []
            for piece in range(placement.split_factor):
                piece_start, piece_length = chunk_extent(total, placement.split_factor, piece)
                start, length = chunk_extent(piece_length, size, index)
                kept += _take(held, piece_start + start, length)
        else:
            kept = _take(held, *chunk_extent(total, size, index))
        ranges[placement.dim] = _merged(kept)
    return ranges


def blocks(ranges: list[Ranges]) -> Iterator[tuple[tuple[slice, ...], list[int]]]:
    """The shard as blocks of the global tensor: (the block's slices of the local tensor, its global
    offset). One block when every dim holds one range (Shard and Replicate placements)."""
    positions = []
    for dim_ranges in ranges:
        local, dim_positions = 0, []
        for first, count in dim_ranges:
            dim_positions.append((slice(local, local + count), first))
            local += count
        positions.append(dim_positions)
    for block in itertools.product(*positions):
        yield tuple(local for local, _ in block), [first for _, first in block]


def local_ranges(tensor: "DTensor") -> list[Ranges]:
    """shard_ranges of this rank's shard of `tensor`."""
    check_placements(tensor)
    mesh = tensor.device_mesh
    return shard_ranges(tensor.shape, mesh.shape, mesh.get_coordinate(), tensor.placements)


def runs(global_shape: Sequence[int], local_shape: Sequence[int], offset: Sequence[int]) -> Iterator[tuple[tuple[int, ...], int]]:
    """The local block as runs contiguous in the global row-major order: (index into the leading
    local dims, global logical index of the run's first element). Dims after the last partial dim
    are whole, so each run is `local[index]`, in order."""
    partial = [d for d in range(len(global_shape)) if local_shape[d] != global_shape[d]]
    last = partial[-1] if partial else 0
    strides = [math.prod(global_shape[d + 1 :]) for d in range(len(global_shape))]
    if math.prod(local_shape) == 0:
        return
    for index in itertools.product(*(range(n) for n in local_shape[:last])):
        start = sum((offset[d] + i) * strides[d] for d, i in enumerate(index))
        yield index, start + (offset[last] * strides[last] if global_shape else 0)


def fill_block(local: Tensor, global_shape, offset, kind: str, params, seed: Tensor, stream: int) -> None:
    """Fill `local`, the block of a global tensor at `offset`, with its part of the unsharded fill:
    on CPU one _fill_block op call (all runs in one parallel region), elsewhere one fill call per run."""
    if local.device.type == "cpu":
        padded = op_params(kind, params, "fill_block")
        torch.ops.initkit._fill_block(local, FILL_KINDS[kind], padded, seed, stream, list(global_shape), list(offset))
    elif local.is_meta:  # nothing to write: one call checks the parameters (one per run: 0.7 s for a vocab's Shard(1))
        getattr(torch.ops.initkit, FILL_OPS[kind])(local, *params, seed, stream)
    else:
        fill_runs(local, global_shape, offset, kind, params, seed, stream)


def fill_runs(local: Tensor, global_shape, offset, kind: str, params, seed: Tensor, stream: int) -> None:
    """fill_block as one fill op call per run (any device)."""
    op = getattr(torch.ops.initkit, FILL_OPS[kind])
    for index, start in runs(global_shape, local.shape, offset):
        op(local[index] if index else local, *params, seed, stream, start)


def shared_key(tensor: "DTensor", generator: torch.Generator | None) -> Tensor:
    """One key for every rank of the tensor's mesh: each rank draws one (keeping generators in
    step), then mesh coordinate 0 broadcasts its key along every mesh dim."""
    from .init import new_seed

    seed = new_seed(generator)
    mesh = tensor.device_mesh
    on_device = seed.to(mesh.device_type)  # NCCL broadcasts device tensors only
    for dim in range(mesh.ndim):
        group = mesh.get_group(dim)
        dist.broadcast(on_device, src=dist.get_global_rank(group, 0), group=group)
    return on_device.cpu()


def fill_shard(
    local: Tensor, global_shape, ranges: list[Ranges], kind: str, params, seed: Tensor, stream: int
) -> None:
    """Fill `local`, the shard that holds `ranges` (shard_ranges) of a global tensor, block by block."""
    found = list(blocks(ranges))
    if len(found) == 1:  # Shard and Replicate placements: the whole local tensor
        fill_block(local, global_shape, found[0][1], kind, params, seed, stream)
        return
    if not found:  # an empty shard: the op still checks the parameters, as the other ranks' calls do
        found = [((), [0] * local.dim())]
    for where, offset in found:
        fill_block(local[where], global_shape, offset, kind, params, seed, stream)


def fill(tensor: "DTensor", kind: str, params, generator: torch.Generator | None, seed: Tensor | None = None, stream: int = 0) -> None:
    """Fill this rank's shard of `tensor` (global fans and shapes are the caller's business)."""
    ranges = local_ranges(tensor)
    key = shared_key(tensor, generator) if seed is None else seed
    local = tensor.to_local()
    with torch.no_grad():
        fill_shard(local, tensor.shape, ranges, kind, [float(p) for p in params], op_seed(local, key), stream)


def fill_row_(tensor: Tensor, row: int, value: float) -> None:
    """tensor[row].fill_(value) for a plain tensor or a DTensor (the rank holding the row writes it)."""
    if not is_dtensor(tensor):
        tensor[row].fill_(value)
        return
    row = row % tensor.shape[0]
    position = 0  # of the range's first row in the local tensor
    for first, count in local_ranges(tensor)[0]:
        if first <= row < first + count:
            tensor.to_local()[position + row - first].fill_(value)
        position += count


def copy_block_(tensor: "DTensor", whole: Tensor) -> None:
    """Write this rank's blocks of `whole` (the unsharded tensor, the same on every rank) into its shard."""
    local = tensor.to_local()
    with torch.no_grad():
        for where, offset in blocks(local_ranges(tensor)):
            local[where].copy_(whole[tuple(slice(o, o + w.stop - w.start) for o, w in zip(offset, where))])
