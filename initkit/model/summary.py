"""Model inspection: a torchinfo-style summary, parameter counts and a state_dict report.

Mult-adds come from torch.utils.flop_counter.FlopCounterMode (every aten op, so functional calls
count too; mult-adds = flops / 2). Shared (tied) parameters are counted once in the totals.
"""

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.utils.flop_counter import FlopCounterMode

from .policy import check_module, init_plan
from .snapshot import restoring
from .table import format_columns


def _rnn_layer_flops(input_shape, w_ih_shape, w_hh_shape, *args, out_shape=None, **kwargs) -> int:
    """aten.mkldnn_rnn_layer (an LSTM layer on the CPU), which FlopCounterMode does not count: the input
    and hidden matmuls of every step, 2 * steps * batch * (w_ih + w_hh) elements."""
    return 2 * math.prod(input_shape[:-1]) * (math.prod(w_ih_shape) + math.prod(w_hh_shape))


_EXTRA_FLOPS = {torch.ops.aten.mkldnn_rnn_layer: _rnn_layer_flops}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts; a parameter shared by several modules counts once."""
    check_module(model)
    params = list(model.parameters())  # parameters() already yields each tensor once
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


@dataclass
class LayerInfo:
    """One module of the summary tree."""

    name: str  # qualified name ("" for the model itself)
    type_name: str
    depth: int
    index: int  # position among its parent's children, 1-based as torchinfo
    output_shape: list | None  # first output's shape, None when not called
    num_params: int  # this module's parameters, recursively (each tensor once within the module)
    own_params: int  # parameters registered directly on this module
    trainable: str  # "True" | "False" | "Partial" | "--" (no parameters)
    tied: bool  # holds a parameter already counted under an earlier module
    mult_adds: int  # inside this module, its children included
    init_std: float | None = None  # measured std of the module's weight
    expected_std: float | None = None  # std its scheme (the summary's policy) gives
    is_leaf: bool = True


@dataclass
class ModelSummary:
    """What summary() measured; str() is the table."""

    model_name: str
    layers: list[LayerInfo]
    depth: int
    total_params: int
    trainable_params: int
    non_trainable_params: int
    total_mult_adds: int
    input_bytes: int
    activation_bytes: int  # outputs of leaf modules during the forward
    param_bytes: int  # each parameter once
    buffer_bytes: int
    output_shape: list | None = None
    input_shapes: list = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return self.input_bytes + self.activation_bytes + self.param_bytes + self.buffer_bytes

    def __str__(self) -> str:
        return _render(self)


def _first_tensor(value) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (list, tuple)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(value, dict):
        return _first_tensor(list(value.values()))
    return None


def _tensor_bytes(value) -> int:
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    if isinstance(value, dict):
        return _tensor_bytes(list(value.values()))
    return 0


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        return p.device, (p.dtype if p.is_floating_point() else torch.float32)
    return torch.device("cpu"), torch.float32


def _make_inputs(model, input_size, input_data, dtypes, device):
    if input_data is not None:
        if input_size is not None:
            raise ValueError("summary: give input_size or input_data, not both")
        if isinstance(input_data, Tensor):
            return (input_data,), {}
        if isinstance(input_data, dict):
            return (), input_data
        if isinstance(input_data, (list, tuple)):
            return tuple(input_data), {}
        raise TypeError(f"summary: input_data must be a tensor, a sequence or a dict, got {type(input_data).__name__}")
    if input_size is None:
        return None
    sizes = _input_shapes(input_size)
    model_device, model_dtype = _model_device_dtype(model)
    device = torch.device(device) if device is not None else model_device
    dtypes = list(dtypes) if dtypes is not None else [model_dtype] * len(sizes)
    if len(dtypes) != len(sizes):
        raise ValueError(f"summary: {len(sizes)} input sizes but {len(dtypes)} dtypes")
    inputs = []
    for size, dtype in zip(sizes, dtypes):
        # integer inputs are token ids: zeros are valid indices for any embedding
        make = torch.randn if dtype.is_floating_point else torch.zeros
        try:
            inputs.append(make(size, dtype=dtype, device=device))
        except NotImplementedError as error:  # no random kernel for the dtype (float8): not a size problem
            first_line = str(error).strip().splitlines()[0]
            raise NotImplementedError(
                f"summary: cannot draw random inputs of {dtype} ({first_line}); pass input_data instead"
            ) from error
        except RuntimeError as error:  # allocation failure, or a size whose byte count overflows
            gigabytes = math.prod(size) * dtype.itemsize / 1e9
            first_line = str(error).strip().splitlines()[0]
            raise RuntimeError(
                f"summary: cannot allocate an input of shape {list(size)} ({gigabytes:.3g} GB of {dtype}): {first_line}"
            ) from error
    return tuple(inputs), {}


_INPUT_SIZE_HELP = "input_size must be a shape (a tuple of non-negative ints, e.g. (2, 4)) or a list of shapes"


def _input_shapes(input_size) -> list:
    """input_size as a list of shapes; TypeError / ValueError saying what it must be."""
    if not isinstance(input_size, (tuple, list, torch.Size)):
        raise TypeError(f"summary: {_INPUT_SIZE_HELP}, got {type(input_size).__name__} {input_size!r}")
    is_shape = all(isinstance(s, int) and not isinstance(s, bool) for s in input_size)
    sizes = [input_size] if is_shape else list(input_size)
    for size in sizes:
        if not isinstance(size, (tuple, list, torch.Size)) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in size
        ):
            raise TypeError(f"summary: {_INPUT_SIZE_HELP}, got {input_size!r}")
        if any(s < 0 for s in size):
            raise ValueError(f"summary: {_INPUT_SIZE_HELP}, got negative sizes in {input_size!r}")
    return sizes


def summary(
    model: nn.Module,
    input_size=None,
    input_data=None,
    depth: int = 3,
    dtypes: list[torch.dtype] | None = None,
    device=None,
    policy="auto",
) -> ModelSummary:
    """A torchinfo-like summary of `model`.

    input_size: a shape (e.g. (2, 4)) or a list of shapes; random inputs of `dtypes` (default: the
    model's float dtype) on `device` (default: the model's) are made. input_data: the inputs
    themselves (tensor, sequence of positional inputs, or dict of keyword inputs). With neither,
    no forward runs (no output shapes or mult-adds). The forward runs in eval mode under no_grad
    (the model's train/eval flags and its buffers are restored). Models on the meta device work.
    The init column compares each weight's std with the std `policy` (default "auto") expects.
    """
    check_module(model)
    if not isinstance(depth, int) or depth < 0:
        raise ValueError(f"summary: depth must be a non-negative int, got {depth!r}")
    inputs = _make_inputs(model, input_size, input_data, dtypes, device)

    named = list(model.named_modules())
    outputs: dict[str, object] = {}
    mult_adds: dict[str, int] = {}
    output_bytes = 0
    if inputs is not None:
        args, kwargs = inputs
        counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOPS)
        starts: dict[str, list[int]] = {}
        handles = []

        def pre_hook(name):
            def hook(module, _args):
                starts.setdefault(name, []).append(counter.get_total_flops())

            return hook

        def post_hook(name, leaf):
            def hook(module, _args, output):
                nonlocal output_bytes
                flops = counter.get_total_flops() - starts[name].pop()
                mult_adds[name] = mult_adds.get(name, 0) + flops // 2
                outputs.setdefault(name, output)
                if leaf:
                    output_bytes += _tensor_bytes(output)

            return hook

        for name, module in named:
            leaf = not list(module.children())
            handles.append(module.register_forward_pre_hook(pre_hook(name)))
            handles.append(module.register_forward_hook(post_hook(name, leaf)))
        try:
            # a look, not a change: buffers a forward updates whatever the mode are put back
            with restoring(model.buffers(), model.modules(), always=True), torch.no_grad(), counter:
                model.eval()  # a summary must not update BatchNorm statistics
                model(*args, **kwargs)
        except Exception as error:
            shapes = [list(a.shape) for a in args if isinstance(a, Tensor)]
            raise ValueError(f"summary: the forward pass failed for inputs of shape {shapes}: {error}") from error
        finally:
            for handle in handles:
                handle.remove()

    plan_std = {row.name: row.std for row in init_plan(model, policy)}
    layers = []
    seen_params: set[int] = set()
    child_index = {}
    for name, module in named:
        if name == "":
            level, index = 0, 1
        else:
            level = name.count(".") + 1
            parent = name.rpartition(".")[0]
            child_index[parent] = child_index.get(parent, 0) + 1
            index = child_index[parent]
        params = list(module.parameters())
        own = list(module.parameters(recurse=False))
        tied = any(id(p) in seen_params for p in own)
        seen_params.update(id(p) for p in own)
        flags = {p.requires_grad for p in params}
        trainable = "--" if not params else ("Partial" if len(flags) == 2 else str(flags.pop()))
        # (reading a parametrized weight computes it: spectral norm's power iteration writes its buffers)
        weight = None if parametrize.is_parametrized(module, "weight") else getattr(module, "weight", None)
        measured = expected = None
        if isinstance(weight, nn.Parameter) and weight.dim() >= 2 and weight.device.type != "meta":
            measured = float(weight.detach().float().std()) if weight.numel() > 1 else None
            weight_name = f"{name}.weight" if name else "weight"
            expected = plan_std.get(weight_name)
        output = _first_tensor(outputs.get(name))
        layers.append(
            LayerInfo(
                name, type(module).__name__, level, index,
                list(output.shape) if output is not None else None,
                sum(p.numel() for p in params), sum(p.numel() for p in own), trainable, tied,
                mult_adds.get(name, 0), measured, expected, not list(module.children()),
            )
        )  # fmt: skip

    total, trainable = count_parameters(model)
    unique_params = list(model.parameters())
    root_output = _first_tensor(outputs.get(""))
    return ModelSummary(
        model_name=type(model).__name__,
        layers=layers,
        depth=depth,
        total_params=total,
        trainable_params=trainable,
        non_trainable_params=total - trainable,
        total_mult_adds=mult_adds.get("", 0),
        input_bytes=_tensor_bytes(list(inputs[0]) + list(inputs[1].values())) if inputs is not None else 0,
        activation_bytes=output_bytes,
        param_bytes=sum(p.numel() * p.element_size() for p in unique_params),
        buffer_bytes=sum(b.numel() * b.element_size() for b in model.buffers()),
        output_shape=list(root_output.shape) if root_output is not None else None,
        input_shapes=[list(a.shape) for a in inputs[0] if isinstance(a, Tensor)] if inputs is not None else [],
    )


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.2f}"


def _render(s: ModelSummary) -> str:
    header = ("Layer (type:depth-idx)", "Output Shape", "Param #", "Trainable", "Mult-Adds", "Init std (expected)")
    rows = []
    shown = [layer for layer in s.layers if layer.depth <= s.depth]
    for layer in shown:
        if layer.depth == 0:
            label = layer.type_name
        else:
            label = "│    " * (layer.depth - 1) + "├─" + f"{layer.type_name}: {layer.depth}-{layer.index}"
        children_shown = not layer.is_leaf and layer.depth < s.depth
        count = layer.own_params if children_shown else layer.num_params
        params = "--" if count == 0 else f"{count:,}" + (" (tied)" if layer.tied else "")
        init_col = ""
        if layer.init_std is not None:
            expected = "--" if layer.expected_std is None else f"{layer.expected_std:.4f}"
            init_col = f"{layer.init_std:.4f} ({expected})"
        rows.append(
            (
                label,
                "--" if layer.output_shape is None else str(layer.output_shape),
                params if layer.depth > 0 else "--",
                layer.trainable,
                f"{layer.mult_adds:,}" if layer.mult_adds else "--",
                init_col,
            )
        )
    table = format_columns(header, rows)
    width = max(len(line) for line in table.splitlines())
    rule = "=" * width
    totals = [
        f"Total params: {s.total_params:,}",
        f"Trainable params: {s.trainable_params:,}",
        f"Non-trainable params: {s.non_trainable_params:,}",
        f"Total mult-adds: {s.total_mult_adds:,}",
        rule,
        f"Input size (MB): {_megabytes(s.input_bytes)}",
        f"Forward pass size (MB): {_megabytes(s.activation_bytes)}",
        f"Params size (MB): {_megabytes(s.param_bytes)}",
        f"Buffers size (MB): {_megabytes(s.buffer_bytes)}",
        f"Estimated total size (MB): {_megabytes(s.total_bytes)}",
    ]
    return "\n".join([rule, table, rule, *totals, rule])


@dataclass
class ParamReport:
    """state_dict entries and named_parameters statistics; str() prints both tables."""

    state_dict: list[tuple[str, list, torch.dtype, torch.device]]  # name, shape, dtype, device
    parameters: list[tuple[str, bool, float | complex | None, float | None]]  # name, requires_grad, mean, variance

    def __str__(self) -> str:
        state = format_columns(
            ("state_dict entry", "shape", "dtype", "device"),
            [(n, str(shape), str(dtype).replace("torch.", ""), str(dev)) for n, shape, dtype, dev in self.state_dict],
        )
        params = format_columns(
            ("parameter", "requires_grad", "mean", "variance"),
            [
                (n, str(rg), "--" if m is None else f"{m:.4g}", "--" if v is None else f"{v:.4g}")
                for n, rg, m, v in self.parameters
            ],
        )
        return f"{state}\n\n{params}"


def param_report(model: nn.Module) -> ParamReport:
    """List state_dict entries (shape, dtype, device) and named_parameters (requires_grad, mean, variance)."""
    check_module(model)
    state = [(name, list(t.shape), t.dtype, t.device) for name, t in model.state_dict().items()]
    params = []
    for name, p in model.named_parameters():
        values = p.detach()
        if values.device.type == "meta" or values.numel() == 0:
            mean = variance = None
        else:  # a complex parameter: its complex mean and E|x - mean|^2 (a cast to double drops the imaginary part)
            values = values.to(torch.complex128 if values.is_complex() else torch.float64)
            mean = values.mean().item()
            variance = float(values.var()) if values.numel() > 1 else 0.0
        params.append((name, p.requires_grad, mean, variance))
    return ParamReport(state, params)

