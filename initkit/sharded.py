"""Sharded fills: each rank fills only its shard of a DTensor, with exactly the values of that part
of the unsharded fill, for any mesh, number of ranks and Shard / Replicate placement.

An element's value depends only on (key, stream, logical index in the GLOBAL tensor): a local block
of the global tensor is cut into runs that are contiguous in the global row-major order, and each
run is filled by the fill op with `offset` = the global index of its first element. Shard(0) (FSDP2)
is one run per rank; Shard(d > 0) (tensor parallel row-wise, 2-D meshes) is one run per row of the
dims before d. On CPU the runs are cut and filled in C++ (one _fill_block op call, one parallel
region); on other devices each run is one fill op call. The key is drawn on every rank and then broadcast from mesh coordinate 0, so every
rank fills with the same key (equal to what a single process seeded the same way draws).
"""

import itertools
import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from ._ext.backend import backend
from ._ext.fill_ops import FILL_KINDS, FILL_OPS, op_params

try:  # torch.distributed may be built out
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor, Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
    from torch.distributed.tensor.placement_types import _StridedShard
except ImportError:  # pragma: no cover
    DTensor = None

def is_dtensor(tensor) -> bool:
    return DTensor is not None and isinstance(tensor, DTensor)


def handles(tensor) -> bool:
    """Whether the sharded path fills `tensor`: a DTensor, on the extension backend (the torch
    backend leaves DTensors to torch's own fills: each rank then draws its own values)."""
    return is_dtensor(tensor) and backend() == "ext"


def check_placements(tensor: "DTensor") -> None:
    for placement in tensor.placements:
        supported = isinstance(placement, Replicate) or (type(placement) is Shard)
        if not supported:  # _StridedShard (FSDP2 over TP), Partial, ...
            raise NotImplementedError(
                f"initkit: cannot fill a DTensor with placement {placement!r} (placements {tuple(tensor.placements)}); "
                "supported: Shard(dim) and Replicate"
            )


def chunk_extent(size: int, chunks: int, index: int) -> tuple[int, int]:
    """(start, length) of chunk `index` of `chunks` along a dim of `size`, as torch.chunk cuts it
    (and DTensor's Shard): chunks of ceil(size / chunks), the last ones shorter or empty."""
    step = -(-size // chunks) if chunks else 0
    start = min(index * step, size)
    return start, max(0, min(step, size - start))


def local_block(global_shape: Sequence[int], mesh_shape: Sequence[int], coordinate: Sequence[int], placements) -> tuple[list[int], list[int]]:
    """(local shape, global offset) of the shard at mesh `coordinate`: Shard(d) along mesh dim i
    cuts what is left of tensor dim d into mesh_shape[i] chunks, in mesh-dim order (DTensor's
    rule). Pure arithmetic, so that any mesh can be simulated in one process."""
    shape, offset = list(global_shape), [0] * len(global_shape)
    for size, index, placement in zip(mesh_shape, coordinate, placements):
        if isinstance(placement, Shard):
            start, length = chunk_extent(shape[placement.dim], size, index)
            offset[placement.dim] += start
            shape[placement.dim] = length
    return shape, offset


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


def fill(tensor: "DTensor", kind: str, params, generator: torch.Generator | None, seed: Tensor | None = None, stream: int = 0) -> None:
    """Fill this rank's shard of `tensor` (global fans and shapes are the caller's business)."""
    check_placements(tensor)
    key = shared_key(tensor, generator) if seed is None else seed
    _, offset = compute_local_shape_and_global_offset(tensor.shape, tensor.device_mesh, tensor.placements)
    with torch.no_grad():
        fill_block(tensor.to_local(), tensor.shape, offset, kind, [float(p) for p in params], key, stream)


def fill_row_(tensor: Tensor, row: int, value: float) -> None:
    """tensor[row].fill_(value) for a plain tensor or a DTensor (the rank holding the row writes it)."""
    if not is_dtensor(tensor):
        tensor[row].fill_(value)
        return
    check_placements(tensor)
    local_shape, offset = compute_local_shape_and_global_offset(tensor.shape, tensor.device_mesh, tensor.placements)
    row = row % tensor.shape[0]
    if offset[0] <= row < offset[0] + local_shape[0]:
        tensor.to_local()[row - offset[0]].fill_(value)


def copy_block_(tensor: "DTensor", whole: Tensor) -> None:
    """Write this rank's block of `whole` (the unsharded tensor, the same on every rank) into its shard."""
    check_placements(tensor)
    local_shape, offset = compute_local_shape_and_global_offset(tensor.shape, tensor.device_mesh, tensor.placements)
    with torch.no_grad():
        tensor.to_local().copy_(whole[tuple(slice(o, o + n) for o, n in zip(offset, local_shape))])
