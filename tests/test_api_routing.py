"""What initkit does not handle itself goes to torch, with torch's behaviour and exception types
(issue 9, items 6 and 14): tensor subclasses such as DTensor, sparse and vmap-batched tensors,
and arguments of the wrong type."""

import pytest
import torch
from torch.func import vmap

import initkit
from helpers import run_python

FILLS = [
    ("uniform_", {}),
    ("normal_", {}),
    ("trunc_normal_", {}),
    ("kaiming_uniform_", {}),
    ("xavier_normal_", {}),
]


class Tagged(torch.Tensor):
    """A tensor subclass that records the torch functions it sees."""

    seen: list = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.seen.append(getattr(func, "__name__", str(func)))
        return super().__torch_function__(func, types, args, kwargs or {})


@pytest.mark.parametrize("name, kwargs", FILLS)
def test_tensor_subclasses_go_to_torch(ext, name, kwargs):
    Tagged.seen = []
    t = torch.zeros(16, 16).as_subclass(Tagged)
    getattr(initkit, name)(t, **kwargs)
    assert t.std() > 0 and any(f.endswith("_") for f in Tagged.seen), Tagged.seen


@pytest.mark.parametrize("name, kwargs", FILLS[:2])
def test_sparse_tensors_get_torchs_own_error(backend, name, kwargs):
    sparse = torch.zeros(4, 4).to_sparse()
    with pytest.raises(NotImplementedError) as theirs:
        getattr(torch.nn.init, name)(sparse.clone(), **kwargs)
    with pytest.raises(NotImplementedError) as ours:
        getattr(initkit, name)(sparse.clone(), **kwargs)
    assert str(ours.value).splitlines()[0] == str(theirs.value).splitlines()[0]


@pytest.mark.parametrize("name, kwargs", [fill for fill in FILLS if fill[0] != "trunc_normal_"])  # torch's fails
def test_vmap_batched_tensors_are_filled_as_torch_fills_them(backend, name, kwargs):
    out = vmap(lambda t: getattr(initkit, name)(t.clone(), **kwargs), randomness="different")(torch.zeros(3, 8, 8))
    assert out.shape == (3, 8, 8) and not torch.equal(out[0], out[1]) and out.std() > 0


def test_dtensor_parameters_go_to_torch():
    code = """
import os, torch, torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import distribute_tensor, Shard
import initkit
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29512")
dist.init_process_group("gloo", rank=0, world_size=1)
mesh = init_device_mesh("cpu", (1,))
for fill in (initkit.normal_, initkit.trunc_normal_, initkit.kaiming_uniform_, initkit.xavier_uniform_):
    d = distribute_tensor(torch.zeros(8, 8), mesh, [Shard(0)])
    fill(d)
    assert d.full_tensor().std() > 0
dist.destroy_process_group()
print("ok")
"""
    out = run_python(code)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda t: initkit.uniform_(t, "0", 1), r"uniform_\(\): argument 'a' \(position 1\) must be float, not str"),
        (lambda t: initkit.uniform_(t, 0, None), r"argument 'b' \(position 2\) must be float, not NoneType"),
        (lambda t: initkit.normal_(t, std="1"), r"normal_\(\): argument 'std' \(position 2\) must be float, not str"),
        (lambda t: initkit.trunc_normal_(t, a="x"), r"trunc_normal_\(\): argument 'a' \(position 3\) must be float"),
        (lambda t: initkit.normal_(t, generator=5), r"argument 'generator' must be torch.Generator, not int"),
        (lambda t: initkit.kaiming_normal_(t, generator="g"), r"argument 'generator' must be torch.Generator, not str"),
    ],
)
def test_wrong_argument_types_raise_type_error_as_torch(backend, call, match):
    with pytest.raises(TypeError, match=match):
        call(torch.empty(4, 4))


def test_torch_raises_type_error_for_the_same_inputs():
    # The reference behaviour the test above matches.
    t = torch.empty(4, 4)
    for call in (lambda: torch.nn.init.uniform_(t, "0", 1), lambda: torch.nn.init.normal_(t, generator=5),
                 lambda: torch.nn.init.trunc_normal_(t, a="x")):  # fmt: skip
        with pytest.raises(TypeError):
            call()
