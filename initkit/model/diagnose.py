"""Signal-propagation diagnostics: per-layer activation and gradient statistics, deep-MLP
experiments under different inits (the classic "why init matters" demo), and LSUV.
"""

import math
import os
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .. import init
from .activations import WEIGHT_LAYERS
from .apply import initialize
from .policy import check_module
from .snapshot import restoring
from .table import format_columns

# A layer's activation (or gradient) std this many times smaller / larger than the signal it
# started from is flagged. Healthy 50-layer Xavier/Tanh and Kaiming/ReLU nets stay within 10x.
VANISHING_RATIO = 1e-2
EXPLODING_RATIO = 1e2

DEPTH_INITS = ("zeros", "normal", "xavier_normal", "xavier_uniform", "kaiming_normal", "kaiming_uniform")
_DEPTH_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


@dataclass
class LayerStats:
    name: str
    type_name: str
    act_mean: float
    act_std: float
    grad_std: float | None  # std of d loss / d output of this layer
    identical_units: bool  # every unit (feature) gives the same output for every sample
    flags: list[str] = field(default_factory=list)


@dataclass
class Diagnosis:
    """Per-layer statistics of one forward and backward pass; str() is a table plus a verdict."""

    layers: list[LayerStats]
    input_std: float
    output_grad_std: float

    @property
    def vanishing(self) -> bool:
        return any("vanishing" in flag for layer in self.layers for flag in layer.flags)

    @property
    def exploding(self) -> bool:
        return any("exploding" in flag for layer in self.layers for flag in layer.flags)

    @property
    def symmetric(self) -> bool:
        """True when every layer with several units gives all units the same output (zero init)."""
        multi_unit = [layer for layer in self.layers if layer.identical_units is not None]
        return bool(multi_unit) and all(layer.identical_units for layer in multi_unit)

    @property
    def healthy(self) -> bool:
        return not (self.vanishing or self.exploding or self.symmetric)

    def verdict(self) -> str:
        problems = []
        if self.symmetric:
            problems.append("all units identical in every layer (symmetry not broken: units cannot differ)")
        if self.vanishing:
            problems.append("vanishing signal")
        if self.exploding:
            problems.append("exploding signal")
        return "healthy" if not problems else "; ".join(problems)

    def __str__(self) -> str:
        rows = [
            (
                layer.name,
                layer.type_name,
                f"{layer.act_mean:+.3e}",
                f"{layer.act_std:.3e}",
                "--" if layer.grad_std is None else f"{layer.grad_std:.3e}",
                ", ".join(layer.flags),
            )
            for layer in self.layers
        ]
        table = format_columns(("layer", "type", "act mean", "act std", "grad std", "flags"), rows)
        return f"{table}\nverdict: {self.verdict()}"


def _units_identical(output: Tensor) -> bool | None:
    """Whether all units agree on every sample; None when there is only one unit."""
    if output.dim() < 2 or output.size(1 if output.dim() > 2 else -1) < 2:
        return None
    units = output.movedim(1, -1) if output.dim() > 2 else output
    units = units.reshape(-1, units.size(-1))
    spread = (units - units[:, :1]).abs().max()
    return bool(spread <= 1e-6 * (units.abs().max() + 1e-30))


def _ratio_flag(value: float, reference: float, what: str) -> str | None:
    if reference == 0 or not math.isfinite(value):
        return None if math.isfinite(value) else f"{what} not finite"
    ratio = value / reference
    if ratio < VANISHING_RATIO:
        return f"{what} vanishing ({ratio:.1e}x)"
    if ratio > EXPLODING_RATIO:
        return f"{what} exploding ({ratio:.1e}x)"
    return None


def diagnose(model: nn.Module, inputs, loss_fn=None) -> Diagnosis:
    """Run one forward and one backward pass with hooks on every leaf module.

    Records each leaf's output mean/std and the std of the loss gradient at that output, and flags
    a layer whose activation std is under VANISHING_RATIO (over EXPLODING_RATIO) times the input's,
    or whose gradient std is that far from the gradient at the model output. The loss is
    loss_fn(output), by default sum(output * r) with a fixed standard-normal r, so the output
    gradient has std 1; for an output that is not a tensor (a dict, a tuple) pass loss_fn, and
    gradients are then not compared with the output's. Parameter gradients are left in .grad as
    after any backward; buffers the forward updates (BatchNorm running statistics in train mode)
    are restored.
    """
    check_module(model)
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    if not all(isinstance(a, Tensor) for a in args):
        raise TypeError("diagnose: inputs must be a tensor or a tuple of tensors")
    # Statistics are taken inside the hook: a later in-place op (ReLU(inplace=True)) rewrites the
    # output tensor itself. A gradient hook registered on the tensor before such an op receives the
    # gradient with respect to the value it had here, as wanted.
    records: list[tuple[str, nn.Module, float, float, bool | None]] = []
    grads: dict[int, float] = {}

    def forward_hook(name):
        def hook(module, _args, output):
            if not isinstance(output, Tensor):
                return
            index = len(records)
            values = output.detach().float()
            std = float(values.std()) if values.numel() > 1 else 0.0
            records.append((name, module, float(values.mean()), std, _units_identical(values)))
            if output.requires_grad:
                output.register_hook(lambda grad: grads.__setitem__(index, float(grad.float().std())))

        return hook

    handles = [
        module.register_forward_hook(forward_hook(name))
        for name, module in model.named_modules()
        if not list(module.children())
    ]
    try:
        # a look, not a change: buffers the forward updates (BatchNorm running statistics) are put back
        with restoring(model.buffers(), always=True):
            output = model(*args)
            if loss_fn is None and not isinstance(output, Tensor):
                raise TypeError("diagnose: the model must return a tensor (pass loss_fn for other outputs)")
            if isinstance(output, Tensor) and output.requires_grad:
                output.register_hook(lambda grad: grads.__setitem__("output", float(grad.float().std())))
            if loss_fn is None:
                # a fixed random projection: the output gradient is N(0, 1), a reference that can vanish or grow
                # (drawn on the CPU generator's device, whatever the default device, then moved to the output's)
                cpu_generator = torch.Generator().manual_seed(0)
                weights = torch.randn(output.shape, generator=cpu_generator, device="cpu").to(output)
                loss = (output * weights).sum()
            else:
                loss = loss_fn(output)
                if not isinstance(loss, Tensor):
                    raise TypeError(f"diagnose: loss_fn must return a tensor, got {type(loss).__name__}")
            if loss.requires_grad:
                loss.backward()
        output_grad_std = grads.get("output")  # None for a non-tensor output: no gradient reference
    finally:
        for handle in handles:
            handle.remove()

    float_inputs = [a.detach().float() for a in args if a.is_floating_point() and a.numel() > 1]
    input_std = sum(float(a.std()) for a in float_inputs) / len(float_inputs) if float_inputs else 1.0
    layers = []
    for index, (name, module, mean, std, identical) in enumerate(records):
        stats = LayerStats(name, type(module).__name__, mean, std, grads.get(index), identical)
        flags = [_ratio_flag(std, input_std, "activation")]
        if stats.grad_std is not None and output_grad_std:
            flags.append(_ratio_flag(stats.grad_std, output_grad_std, "gradient"))
        stats.flags.extend(flag for flag in flags if flag)
        if stats.identical_units:
            stats.flags.append("all units identical")
        layers.append(stats)
    return Diagnosis(layers, input_std, output_grad_std or 0.0)


# ---- deep-MLP experiment -------------------------------------------------------------------


def _depth_policy(init_name: str, normal_std: float):
    if init_name == "zeros":
        return {"*": "zeros"}
    if init_name == "normal":
        return {"*.weight": ("normal", {"std": normal_std}), "*.bias": "zeros"}
    return init_name


def depth_mlp(depth: int, width: int, activation: str) -> nn.Sequential:
    """`depth` Linear(width, width) layers, each followed by the activation."""
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), _DEPTH_ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


def _pyplot():
    """matplotlib.pyplot with a file-only backend; matplotlib is optional, so imported here."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib, which is not installed: pip install matplotlib") from None
    return plt


def _check_writable(path) -> None:
    """Raise the OSError that saving a file at `path` would raise, before any work is done."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path}: the directory {directory} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path}: it is a directory")
    target = path if os.path.exists(path) else directory
    if not os.access(target, os.W_OK):
        raise PermissionError(f"cannot write {path}: permission denied")


@dataclass
class DepthReport:
    """Activation / gradient std after each Linear+activation block, for each init."""

    depth: int
    width: int
    activation: str
    act_std: dict[str, list[float]]
    grad_std: dict[str, list[float]]
    diagnoses: dict[str, Diagnosis]

    def __str__(self) -> str:
        inits = list(self.act_std)
        header = ("layer", *(f"{name} act" for name in inits), *(f"{name} grad" for name in inits))
        rows = [
            (str(i + 1), *(f"{self.act_std[n][i]:.3e}" for n in inits), *(f"{self.grad_std[n][i]:.3e}" for n in inits))
            for i in range(self.depth)
        ]
        title = f"{self.depth}-layer MLP, width {self.width}, {self.activation}: std of each block's output / gradient"
        verdicts = [f"{name}: {self.diagnoses[name].verdict()}" for name in inits]
        return "\n".join([title, format_columns(header, rows), *verdicts])

    def plot(self, path) -> None:
        """Save a PNG of activation and gradient std per layer (needs matplotlib)."""
        plt = _pyplot()
        figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        layers = range(1, self.depth + 1)
        for name in self.act_std:
            left.semilogy(layers, [max(v, 1e-30) for v in self.act_std[name]], label=name)
            right.semilogy(layers, [max(v, 1e-30) for v in self.grad_std[name]], label=name)
        left.set(title="activation std", xlabel="layer")
        right.set(title="gradient std", xlabel="layer")
        left.legend()
        figure.suptitle(f"{self.depth}-layer MLP, width {self.width}, {self.activation}")
        figure.savefig(path, dpi=100)
        plt.close(figure)


def diagnose_depth(
    depth: int = 30,
    width: int = 128,
    activation: str = "tanh",
    init=("zeros", "normal", "xavier_normal", "kaiming_normal"),
    batch: int = 256,
    normal_std: float = 0.05,
    seed: int = 0,
    plot=None,
) -> DepthReport:
    """Build a `depth`-layer MLP (Linear(width, width) + activation), initialize it with each of
    `init` ("zeros", "normal" = N(0, normal_std^2), "xavier_normal", ..., see DEPTH_INITS), run one
    forward/backward on a standard-normal batch and report the std per layer. `plot` = PNG path.
    """
    if not isinstance(depth, int) or not 1 <= depth <= 1000:
        raise ValueError(f"diagnose_depth: depth must be an int in [1, 1000], got {depth!r}")
    if not isinstance(width, int) or width < 2:
        raise ValueError(f"diagnose_depth: width must be an int >= 2, got {width!r}")
    if activation not in _DEPTH_ACTIVATIONS:
        raise ValueError(f"diagnose_depth: activation must be one of {list(_DEPTH_ACTIVATIONS)}, got {activation!r}")
    inits = [init] if isinstance(init, str) else list(init)
    for name in inits:
        if name not in DEPTH_INITS:
            raise ValueError(f"diagnose_depth: unknown init {name!r}; expected one of {list(DEPTH_INITS)}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"diagnose_depth: batch must be an int >= 1, got {batch!r}")
    if plot is not None:  # fail before the runs, not after
        _check_writable(plot)
        _pyplot()
    generator = torch.Generator().manual_seed(seed)
    batch_data = torch.randn(batch, width, generator=generator)
    act_std, grad_std, diagnoses = {}, {}, {}
    for name in inits:
        model = depth_mlp(depth, width, activation)
        initialize(model, _depth_policy(name, normal_std), generator=generator)
        diagnosis = diagnose(model, batch_data)
        blocks = diagnosis.layers[1::2]  # the activation output closes each block
        act_std[name] = [layer.act_std for layer in blocks]
        grad_std[name] = [layer.grad_std or 0.0 for layer in blocks]
        diagnoses[name] = diagnosis
    report = DepthReport(depth, width, activation, act_std, grad_std, diagnoses)
    if plot is not None:
        report.plot(plot)
    return report


# ---- LSUV --------------------------------------------------------------------------------


def lsuv_(model: nn.Module, batch, tol: float = 0.1, max_iter: int = 10, generator: torch.Generator | None = None):
    """Layer-sequential unit-variance init (Mishkin & Matas, ICLR 2016), in place; returns `model`.

    Each Linear/Conv weight gets an orthonormal init (biases 0); then, in the order the layers run
    on `batch`, each weight is rescaled by 1 / std(output) until |var(output) - 1| < tol or
    max_iter passes were made. The forward passes run in the model's current train/eval mode;
    only the weights and biases change: buffers the forwards update (BatchNorm running
    statistics) are restored, as are the modules' training flags. A batch the model cannot run
    is found by a forward before any change; on any failure (a layer whose output variance is 0
    or not finite) the weights and biases are restored too. A weight computed from other
    tensors (weight_norm, torch.nn.utils.parametrize) is refused: rescaling it would not change
    the layer.
    """
    check_module(model)
    if not (tol > 0 and isinstance(max_iter, int) and not isinstance(max_iter, bool) and max_iter >= 1):
        raise ValueError(f"lsuv_: need tol > 0 and max_iter >= 1, got tol={tol!r}, max_iter={max_iter!r}")
    args = batch if isinstance(batch, tuple) else (batch,)
    if not all(isinstance(a, Tensor) for a in args):
        raise TypeError("lsuv_: batch must be a tensor or a tuple of tensors")
    names = {m: name for name, m in model.named_modules()}
    layers = [m for m in names if isinstance(m, WEIGHT_LAYERS)]
    for layer in layers:
        if not isinstance(layer._parameters.get("weight"), nn.Parameter):
            raise NotImplementedError(
                f"lsuv_: the weight of layer {names[layer]!r} ({type(layer).__name__}) is computed from other "
                "tensors (weight_norm, parametrize), not a parameter: lsuv_ cannot rescale it"
            )
    weights = [p for layer in layers for p in (layer.weight, layer.bias) if p is not None]
    with restoring(model.buffers(), model.modules(), always=True), restoring(weights):
        _lsuv_passes(model, args, layers, tol, max_iter, generator)
    return model


def _lsuv_passes(model, args, layers, tol, max_iter, generator) -> None:
    # the first forward runs before any change: a batch the model cannot take fails here
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, a, o: order.append(m) if m not in order else None) for m in layers]
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for hook in hooks:
            hook.remove()

    with torch.no_grad():
        for layer in layers:
            init.orthogonal_(layer.weight, generator=generator)
            if layer.bias is not None:
                layer.bias.zero_()

    for layer in order:
        measured = {}
        # the variance is taken in the hook: a later in-place op (ReLU(inplace=True)) rewrites the output
        hook = layer.register_forward_hook(lambda m, a, o: measured.__setitem__("var", float(o.float().var())))
        try:
            with torch.no_grad():
                for _ in range(max_iter):
                    model(*args)
                    variance = measured["var"]
                    if abs(variance - 1.0) < tol:
                        break
                    if variance == 0 or not math.isfinite(variance):
                        name = type(layer).__name__
                        raise ValueError(f"lsuv_: output variance of {name} is {variance}; cannot rescale")
                    layer.weight.div_(math.sqrt(variance))
        finally:
            hook.remove()
