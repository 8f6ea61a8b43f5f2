"""One rank of the sharded-init tests (tests/test_sharded.py starts WORLD of these): every check
compares the sharded result bitwise with a single-process fill under the same seed (gathered with
full_tensor(), or each rank's shard against torch's split of the unsharded fill). Prints one line per check: "<name> ok" or "<name> FAIL <detail>"."""

import math
import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.placement_types import Partial, _StridedShard

import initkit
from initkit import sharded

rank, world, port = (int(a) for a in sys.argv[1:4])
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
dist.init_process_group("gloo", rank=rank, world_size=world)
results = []


def check(name, ok, detail=""):
    results.append(f"{name} {'ok' if ok else 'FAIL ' + str(detail)}")


FILLS = {
    "normal": lambda t: initkit.normal_(t, 0.0, 0.02),
    "uniform": lambda t: initkit.uniform_(t, -0.5, 0.5),
    "trunc_normal": lambda t: initkit.trunc_normal_(t, std=0.02),
    "xavier_uniform": initkit.xavier_uniform_,
    "kaiming_normal": lambda t: initkit.kaiming_normal_(t, nonlinearity="relu"),
    "variance_scaling": lambda t: initkit.variance_scaling_(t, 2.0, "fan_avg", "truncated_normal"),
}
meshes = {"1d": init_device_mesh("cpu", (world,))}
placements = {"1d": [[Shard(0)], [Shard(1)], [Replicate()]]}
if world == 4:
    meshes["2d"] = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    placements["2d"] = [[Shard(0), Shard(1)], [Replicate(), Shard(0)], [Shard(1), Shard(1)], [Shard(0), Replicate()]]


def holds_its_ranges(shape, mesh, places):
    """This rank's shard of a tensor of global indices is the elements sharded.shard_ranges names."""
    whole = torch.arange(math.prod(shape)).view(shape)
    ranges = sharded.shard_ranges(shape, mesh.shape, mesh.get_coordinate(), places)
    held = [torch.tensor([i for first, n in dim for i in range(first, first + n)], dtype=torch.long) for dim in ranges]
    return torch.equal(distribute_tensor(whole, mesh, places).to_local(), whole[torch.meshgrid(*held, indexing="ij")])


def check_fills(mesh_name, mesh, places, shape, dtypes):
    """Every fill of FILLS on a DTensor equals the unsharded fill under the same seed."""
    for dtype in dtypes:
        for fill_name, fill in FILLS.items():
            d = distribute_tensor(torch.zeros(shape, dtype=dtype), mesh, places)
            torch.manual_seed(11)
            fill(d)
            torch.manual_seed(11)
            ref = fill(torch.zeros(shape, dtype=dtype))
            # each rank's shard against torch's own split of the unsharded fill (full_tensor() cannot
            # gather (_StridedShard(0), Shard(1)) on torch 2.11)
            expected = distribute_tensor(ref, mesh, places).to_local()
            check(f"{mesh_name}-{places}-{shape}-{dtype}-{fill_name}", torch.equal(d.to_local(), expected))
    check(f"shard_ranges-{mesh_name}-{places}-{shape}", holds_its_ranges(shape, mesh, places))


for mesh_name, mesh in meshes.items():
    for places in placements[mesh_name]:
        for shape in ((10, 7), (64, 48), (3, 5, 6)):
            check_fills(mesh_name, mesh, places, shape, (torch.float32, torch.bfloat16, torch.float64))
# _StridedShard (FSDP2 over tensor parallel) built directly: distribute_tensor takes even sizes only
# (uneven ones come through fully_shard below).
if world == 4:
    strided = [
        ([_StridedShard(0, split_factor=2), Shard(0)], (8, 6)),
        ([_StridedShard(1, split_factor=2), Shard(1)], (3, 12, 2)),
        ([_StridedShard(0, split_factor=2), Shard(1)], (4, 6)),
    ]
    for places, shape in strided:
        check_fills("2d", meshes["2d"], places, shape, (torch.float32, torch.bfloat16))

def raised(fill, tensor):
    try:
        fill(tensor)
    except Exception as error:  # noqa: BLE001 (the type is what is compared)
        return error
    return None


# multi_fill_: one key, stream i for tensor i, as unsharded
mesh = meshes["1d"]
shapes = [(12, 4), (7,), (5, 9)]
ds = [distribute_tensor(torch.zeros(s), mesh, [Shard(0)]) for s in shapes]
fills = [("normal", (0.0, 1.0)), ("uniform", (-1.0, 1.0)), ("trunc_normal", (0.0, 1.0, -2.0, 2.0))]
torch.manual_seed(5)
initkit.multi_fill_(ds, fills)
torch.manual_seed(5)
refs = initkit.multi_fill_([torch.zeros(s) for s in shapes], fills)
check("multi_fill", all(torch.equal(d.full_tensor(), r) for d, r in zip(ds, refs)))

# multi_fill_ checks every tensor before the first write, as on plain tensors (one op call checks them
# all there): a bad parameter or placement of a later tensor leaves the earlier ones unwritten.
for bad, fill in (("std", ("normal", (0.0, -1.0))), ("placement", ("normal", (0.0, 1.0)))):
    first = distribute_tensor(torch.zeros(6, 4), mesh, [Shard(0)])
    second = DTensor.from_local(torch.zeros(3), mesh, [Partial()]) if bad == "placement" else torch.zeros(3)
    error = raised(lambda t: initkit.multi_fill_([t, second], [("uniform", (0.0, 1.0)), fill]), first)
    check(f"multi_fill-bad-{bad}-writes-nothing", type(error) is RuntimeError and not first.to_local().any(), error)



def partial():
    return DTensor.from_local(torch.zeros(4, 4), mesh, [Partial()])


# Partial: a clear error naming the placement, of the type torch's own fill raises
error, torch_error = raised(initkit.normal_, partial()), raised(nn.init.normal_, partial())
same_type = type(error) is type(torch_error) is RuntimeError
check("partial-error", same_type and "Partial" in str(error), (error, torch_error))

# Dtypes the kernels do not take stay torch's: complex values (as torch fills them), integers
# raise torch's error for a DTensor.
for dtype in (torch.complex64, torch.int64):
    error = raised(initkit.normal_, distribute_tensor(torch.zeros(8, 4, dtype=dtype), mesh, [Shard(0)]))
    torch_error = raised(nn.init.normal_, distribute_tensor(torch.zeros(8, 4, dtype=dtype), mesh, [Shard(0)]))
    check(f"dtype-{dtype}-as-torch", type(error) is type(torch_error), (error, torch_error))

# A DTensor whose local shard is a FakeTensor, filled outside its FakeTensorMode: the shared key is
# converted as initkit.normal_ converts it for a plain FakeTensor (torch's normal_ fills it too).
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

with FakeTensorMode():
    fake_local = torch.empty(3, 5)
fake = DTensor.from_local(fake_local, mesh, [Shard(0)], run_check=False)
check("fake-local-normal", raised(initkit.normal_, fake) is None, raised(initkit.normal_, fake))
error = raised(lambda t: initkit.multi_fill_([t, fake_local], [("uniform", (0.0, 1.0))] * 2), fake)
check("fake-local-multi_fill", error is None, error)


def mlp():
    return nn.Sequential(nn.Embedding(37, 16, padding_idx=3), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8), nn.LayerNorm(8))


def full_state(model):
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v) for k, v in model.state_dict().items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def reference(policy):
    with torch.device("meta"):
        model = mlp()
    torch.manual_seed(21)
    initkit.materialize(model, policy=policy)
    return model.state_dict()


# FSDP2 on a meta model, then materialize: each rank allocates and fills its shards only
from torch.distributed.fsdp import fully_shard  # noqa: E402

for policy in ("auto", "kaiming_uniform"):
    with torch.device("meta"):
        model = mlp()
    for layer in (model[1], model[3]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    torch.manual_seed(21)
    initkit.materialize(model, policy=policy)
    local_numel = sum(p.to_local().numel() for p in model.parameters())
    full = {k: v.full_tensor() for k, v in model.state_dict().items()}
    ref = reference(policy)
    check(f"fsdp2-materialize-{policy}", all(torch.equal(full[k], ref[k]) for k in ref))
    check(f"fsdp2-local-storage-{policy}", local_numel <= sum(v.numel() for v in ref.values()) // world + 64, local_numel)

# The same with a progress bar (fills in pieces): one shared key for every piece.
import io  # noqa: E402
import initkit.model.apply as apply_module  # noqa: E402


class Terminal(io.StringIO):
    def isatty(self):
        return True


saved = (apply_module.PROGRESS_MIN_PARAMS, apply_module._PROGRESS_CHUNK_ELEMENTS, sys.stderr)
apply_module.PROGRESS_MIN_PARAMS, apply_module._PROGRESS_CHUNK_ELEMENTS, sys.stderr = 0, 100, Terminal()
try:
    with torch.device("meta"):
        model = mlp()
    fully_shard(model, mesh=mesh)
    torch.manual_seed(21)
    initkit.materialize(model)
finally:
    apply_module.PROGRESS_MIN_PARAMS, apply_module._PROGRESS_CHUNK_ELEMENTS, sys.stderr = saved
check("fsdp2-materialize-progress-pieces", same_state(full_state(model), reference("auto")))

# tensor parallel on meta: colwise then rowwise Linear
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module  # noqa: E402

with torch.device("meta"):
    tp = mlp()
parallelize_module(tp, mesh, {"1": ColwiseParallel(), "3": RowwiseParallel()})
torch.manual_seed(21)
initkit.materialize(tp)
full = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v) for k, v in tp.state_dict().items()}
ref = reference("auto")
check("tp-materialize", all(torch.equal(full[k], ref[k]) for k in ref))

# patch(): a model's own init_weights on sharded parameters
with torch.device("meta"):
    own = nn.Linear(24, 12)
fully_shard(own, mesh=mesh)
own.to_empty(device="cpu")
torch.manual_seed(9)
with initkit.patch():
    own.reset_parameters()
plain = nn.Linear(24, 12)
torch.manual_seed(9)
with initkit.patch():
    plain.reset_parameters()
check("patch-reset_parameters", torch.equal(own.weight.full_tensor(), plain.weight) and torch.equal(own.bias.full_tensor(), plain.bias))

# A deferred model (its own init, recorded): fully_shard / parallelize_module, then materialize gives
# the unsharded deferred model's weights. The recipes cover fused fills, constants, a padding-row
# write, orthogonal_ and creation values (replays, run on an unsharded scratch copy per parameter).
class Own(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(37, 16, padding_idx=3)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 8)
        self.norm = nn.LayerNorm(8)
        self.pos = nn.Parameter(torch.arange(12 * 16, dtype=torch.float32).reshape(12, 16) / 7)
        nn.init.trunc_normal_(self.fc1.weight, std=0.02)
        nn.init.zeros_(self.fc1.bias)
        nn.init.orthogonal_(self.fc2.weight)
        self.fc2.bias.data.normal_(0.0, 0.5)


deferred_ref = initkit.deferred_init(Own)
torch.manual_seed(31)
initkit.materialize(deferred_ref)
torch.manual_seed(32)
initkit.initialize(deferred_ref, policy="recorded")
reinit_ref = full_state(deferred_ref)
torch.manual_seed(31)
deferred_ref = full_state(initkit.materialize(initkit.deferred_init(Own)))
for how in ("fsdp2", "tp"):
    own = initkit.deferred_init(Own)
    if how == "fsdp2":
        for layer in (own.fc1, own.fc2):
            fully_shard(layer, mesh=mesh)
        fully_shard(own, mesh=mesh)
    else:
        parallelize_module(own, mesh, {"fc1": ColwiseParallel(), "fc2": RowwiseParallel()})
    torch.manual_seed(31)
    initkit.materialize(own)
    check(f"deferred-{how}-materialize", same_state(full_state(own), deferred_ref))
    check(f"deferred-{how}-sharded", own.fc1.weight.to_local().shape[0] == 32 // world, own.fc1.weight.to_local().shape)
    torch.manual_seed(32)
    initkit.initialize(own, policy="recorded")
    check(f"deferred-{how}-reinitialize", same_state(full_state(own), reinit_ref))


# patch(): a torchtitan-style init_weights (nn.init calls) on FSDP2 and tensor-parallel parameters
class Titan(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(40, 16)
        self.w1 = nn.Linear(16, 48, bias=False)
        self.w2 = nn.Linear(48, 16, bias=False)
        self.norm = nn.LayerNorm(16)

    def init_weights(self):
        nn.init.normal_(self.tok.weight)
        nn.init.trunc_normal_(self.w1.weight, mean=0.0, std=0.02)
        nn.init.trunc_normal_(self.w2.weight, mean=0.0, std=0.02, a=-0.03, b=0.03)
        self.norm.reset_parameters()


plain = Titan()
torch.manual_seed(41)
with initkit.patch():
    plain.init_weights()
titan_plain_state = plain.state_dict()
for how in ("fsdp2", "tp"):
    with torch.device("meta"):
        titan = Titan()
    if how == "fsdp2":
        fully_shard(titan.w1, mesh=mesh)
        fully_shard(titan, mesh=mesh)
    else:
        parallelize_module(titan, mesh, {"w1": ColwiseParallel(), "w2": RowwiseParallel()})
    titan.to_empty(device="cpu")
    torch.manual_seed(41)
    with initkit.patch():
        titan.init_weights()
    check(f"patch-init_weights-{how}", same_state(full_state(titan), titan_plain_state))

# FSDP2 over tensor parallel as torchtitan builds it on a 2-D mesh: parallelize_module on the tp
# sub-mesh, then fully_shard on the dp one. Column-wise weights and row-wise embeddings become
# _StridedShard(0) (uneven here: 37 and 40 embedding rows over 2 x 2 ranks); every model tool gives
# the unsharded model's values.
if world == 4:
    dp, tp = meshes["2d"]["dp"], meshes["2d"]["tp"]

    def two_d(model, plan):
        parallelize_module(model, tp, plan)
        fully_shard(model, mesh=dp)
        return model

    def strided(model):
        return sum(isinstance(p, _StridedShard) for param in model.parameters() for p in param.placements)

    mlp_plan = {"0": RowwiseParallel(), "1": ColwiseParallel(), "3": RowwiseParallel()}
    with torch.device("meta"):
        model = two_d(mlp(), mlp_plan)
    torch.manual_seed(21)
    initkit.materialize(model)
    check("2d-fsdp-tp-strided-placements", strided(model) == 3, strided(model))
    check("2d-fsdp-tp-materialize", same_state(full_state(model), reference("auto")))
    plain = mlp()
    torch.manual_seed(22)
    initkit.initialize(plain, policy="kaiming_uniform")
    torch.manual_seed(22)
    initkit.initialize(model, policy="kaiming_uniform")
    check("2d-fsdp-tp-initialize", same_state(full_state(model), plain.state_dict()))

    own = two_d(initkit.deferred_init(Own), {"emb": RowwiseParallel(), "fc1": ColwiseParallel(), "fc2": RowwiseParallel()})
    torch.manual_seed(31)
    initkit.materialize(own)
    check("2d-fsdp-tp-deferred-materialize", strided(own) == 3 and same_state(full_state(own), deferred_ref), strided(own))
    torch.manual_seed(32)
    initkit.initialize(own, policy="recorded")
    check("2d-fsdp-tp-deferred-reinitialize", same_state(full_state(own), reinit_ref))

    with torch.device("meta"):
        titan = two_d(Titan(), {"tok": RowwiseParallel(), "w1": ColwiseParallel(), "w2": RowwiseParallel()})
    titan.to_empty(device="cpu")
    torch.manual_seed(41)
    with initkit.patch():
        titan.init_weights()
    check("2d-fsdp-tp-patch-init_weights", same_state(full_state(titan), titan_plain_state))

# Peak memory of a sharded materialize: the rank's shards, not the model. VmHWM is reset just before
# (clear_refs), so the peak increase over the current RSS is what materialize itself touched; a
# warm-up materialize first maps the code it runs. The control (one unsharded copy of the model's
# weights) shows that the measurement sees what a rank allocates and writes. malloc_trim first hands
# back the heap pages freed since (the warm-up model's): otherwise malloc reuses them without a new
# page fault and the peak reads low (7/8 of the shards on torch 2.11).
import ctypes  # noqa: E402
import gc  # noqa: E402
import re  # noqa: E402


def status_kib(field):
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def peak_increase(fn):
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status_kib("VmRSS")
    fn()
    return (status_kib("VmHWM") - before) * 1024


def big():
    return nn.Sequential(*(nn.Linear(2048, 2048) for _ in range(8)))  # 128 MiB of float32


def sharded_big():
    with torch.device("meta"):
        model = big()
    for layer in model:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


for _ in range(2):  # warm-up: the same code paths on a small model
    warm = sharded_big()[:1]
    initkit.materialize(warm)
    del warm
model = sharded_big()
peak = peak_increase(lambda: initkit.materialize(model))
local_bytes = sum(p.to_local().numel() * p.element_size() for p in model.parameters())
check("rss-sharded-materialize", 0.9 * local_bytes <= peak <= 1.1 * local_bytes, (peak, local_bytes))
del model
control = peak_increase(lambda: initkit.normal_(torch.empty(world * local_bytes // 4)))
check("rss-control-unsharded", control >= 0.9 * world * local_bytes, (control, world * local_bytes))
results.append(f"rss-numbers peak {peak} local {local_bytes} ratio {peak / local_bytes:.4f}")

print("\n".join(results), flush=True)
dist.barrier()
dist.destroy_process_group()
# Leave without interpreter teardown: gloo's threads can abort it ("terminate called without an
# active exception") after every check has already been printed.
os._exit(0)
