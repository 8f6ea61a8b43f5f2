"""Applying a plan: every random fill in one multi_fill_ call (one parallel region), then the
constants, orthogonal fills and reset_parameters() calls; a progress bar for big models.
"""

import sys

import torch
from torch import Tensor, nn

from .. import init, sharded
from ..schemes import RANDOM_KINDS
from .activations import EMBEDDINGS
from .policy import InitPlan, check_module, init_plan, reset_method
from .snapshot import restoring

# Initializing more parameters than this shows a progress bar when stderr is a terminal.
PROGRESS_MIN_PARAMS = 1_000_000_000
# With a progress bar the fill runs in pieces of about this many elements (same numbers).
_PROGRESS_CHUNK_ELEMENTS = 64 * 1024 * 1024


def apply_plan(model: nn.Module, plan: InitPlan, generator: torch.Generator | None, description: str) -> None:
    """Fill `model` as `plan` says. Every check is made before the first write (when the plan was
    built, and _check_writes), so initkit's own fills cannot fail halfway; the modules'
    reset_parameters() ("torch_default") run first, as they are the model's own code: if one
    raises, the parameters and buffers of the modules they reset are restored."""
    params = dict(model.named_parameters())
    _check_writes(model, plan, params)
    random_rows = [row for row in plan if row.kind in RANDOM_KINDS]
    tensors = [params[row.name] for row in random_rows]
    fills = [(row.kind, row.params) for row in random_rows]
    total = sum(t.numel() for t in params.values())
    with torch.no_grad(), Progress(total, description) as bar:
        _run_resets(model, plan, generator, bar)  # before initkit's fills: policy overrides win
        fill_random(tensors, fills, generator, bar)
        for row in plan:
            if row.kind in ("constant", "orthogonal"):
                init.fill_scheme_(params[row.name], row.spec, generator)
                bar.update(params[row.name].numel())
        for module in model.modules():
            if isinstance(module, EMBEDDINGS) and module.padding_idx is not None:
                sharded.fill_row_(module.weight, module.padding_idx, 0.0)  # as torch's Embedding(Bag)


def _check_writes(model: nn.Module, plan: InitPlan, params: dict[str, Tensor]) -> None:
    """Raise, before anything is written, the errors the writes after the random fills would
    raise: fill_'s overflow check for a constant (check_constant), a dtype or device without QR
    for an orthogonal fill (a 2x2 probe with its own generator), a padding_idx set after
    construction outside the table (torch's IndexError)."""
    for row in plan:
        param = params[row.name]
        try:
            if row.kind == "constant":
                check_constant(param, row.params[0])
            elif row.kind == "orthogonal":
                probe = torch.empty(2, 2, dtype=param.dtype, device=param.device)
                init.orthogonal_(probe, generator=torch.Generator(param.device))
        except RuntimeError as error:  # NotImplementedError too (no QR kernel for the dtype)
            detail = f"parameter {row.name!r} of dtype {param.dtype} on {param.device}"
            raise type(error)(f"cannot apply {row.scheme!r} to {detail}: {error}") from None
    for name, module in model.named_modules():
        if isinstance(module, EMBEDDINGS) and module.padding_idx is not None:
            rows = module.weight.shape[0]
            if not -rows <= module.padding_idx < rows:
                raise IndexError(
                    f"{name or type(module).__name__}.padding_idx {module.padding_idx} is out of bounds "
                    f"for {rows} embeddings"
                )


def check_constant(tensor: Tensor, value: float) -> None:
    """Raise what tensor.fill_(value) would (RuntimeError when `value` overflows the dtype), on a
    probe of the dtype: fill_ checks only tensors of more than one element, so as many, up to 2.
    On the CPU whatever the default device: a meta probe would not check."""
    torch.empty(min(tensor.numel(), 2), dtype=tensor.dtype, device="cpu").fill_(value)


def _run_resets(model: nn.Module, plan: InitPlan, generator: torch.Generator | None, bar: "Progress") -> None:
    """Run reset_parameters() of every module a "torch_default" row names, each under torch's RNG
    seeded from `generator` when one is given. A failure restores the parameters and buffers
    (BatchNorm's running statistics) of those modules (a copy is kept until all are done)."""
    owners = {row.name.rpartition(".")[0] for row in plan if row.scheme == "torch_default"}
    modules = [module for name, module in model.named_modules() if name in owners]
    if not modules:
        return
    state = [t for module in modules for t in (*module.parameters(recurse=False), *module.buffers(recurse=False))]
    with restoring(state):
        for module in modules:
            _reset_with_generator(module, generator)
            bar.update(sum(p.numel() for p in module.parameters(recurse=False)))


def _reset_with_generator(module: nn.Module, generator: torch.Generator | None) -> None:
    if generator is None:
        reset_method(module)()
        return
    # reset_parameters() draws from torch's default generators: seed them from `generator` for
    # this call only, so the result depends on `generator` and the global RNG is left as it was.
    seed = int(init.new_seed(generator))
    cuda = sorted({p.device.index or 0 for p in module.parameters(recurse=False) if p.is_cuda})
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(seed)
        reset_method(module)()


def fill_random(tensors: list[Tensor], fills, generator, bar) -> None:
    if not bar.active:
        init.multi_fill_(tensors, fills, generator)
        return
    # Same numbers in pieces, so the bar can move: one key for every piece, tensor i keeps stream i.
    seed = init.multi_fill_key(tensors, generator)
    start = 0
    while start < len(tensors):
        stop, elements = start, 0
        while stop < len(tensors) and (stop == start or elements < _PROGRESS_CHUNK_ELEMENTS):
            elements += tensors[stop].numel()
            stop += 1
        # (torch's fills take one tensor after another from `generator`: chunking changes nothing)
        init.multi_fill_(tensors[start:stop], fills[start:stop], generator, seed=seed, first_stream=start)
        bar.update(elements)
        start = stop


class Progress:
    """A progress bar on stderr for big models (tqdm when installed), a no-op otherwise."""

    def __init__(self, total: int, description: str):
        self.active = total >= PROGRESS_MIN_PARAMS and sys.stderr.isatty()
        self.total, self.done, self.description = total, 0, description
        self._tqdm = None
        if self.active:
            try:
                from tqdm import tqdm
            except ImportError:
                self._draw()
            else:
                self._tqdm = tqdm(total=total, desc=description, unit="param", unit_scale=True, file=sys.stderr)

    def update(self, count: int) -> None:
        if not self.active or count == 0:
            return
        self.done = min(self.total, self.done + count)
        if self._tqdm is not None:
            self._tqdm.update(count)
        else:
            self._draw()

    def _draw(self) -> None:
        fraction = self.done / self.total if self.total else 1.0
        filled = int(30 * fraction)
        sys.stderr.write(f"\r{self.description} [{'#' * filled}{'.' * (30 - filled)}] {100 * fraction:3.0f}%")
        sys.stderr.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if not self.active:
            return
        if self._tqdm is not None:
            self._tqdm.close()
        else:
            sys.stderr.write("\n")
            sys.stderr.flush()


def initialize(model: nn.Module, policy="auto", generator: torch.Generator | None = None) -> InitPlan:
    """Initialize every parameter of `model` in one multi-tensor pass; return the plan.

    "auto": a Linear/Conv followed by ReLU, LeakyReLU (its slope), GELU or SiLU gets Kaiming
    normal (fan_in); by Tanh or Sigmoid, by nothing (output layer) or anything else, Xavier uniform
    with calculate_gain's gain; by SELU, LeCun normal. Biases 0, norm layers weight 1 / bias 0,
    Embedding normal(0, 1) (padding row 0). Activations are read from a torch.fx trace, or from
    module registration order when the model does not trace. See init_plan for the other policies.

    Random fills use one initkit.init.multi_fill_ call (one key from `generator`, the parameter with
    row.stream = i on Philox stream i); constants are written with fill_, "orthogonal" uses
    initkit.orthogonal_ per tensor, "torch_default" calls each module's reset_parameters().
    """
    check_module(model)
    meta = [name for name, p in model.named_parameters() if p.is_meta]
    if meta:  # a fill of a meta tensor writes nothing: it would return a plan and leave no values
        raise RuntimeError(
            f"initialize: parameters {meta[:3]}{' ...' if len(meta) > 3 else ''} are on the meta device "
            "(no storage to fill); allocate and initialize them with initkit.materialize(model, device=...)"
        )
    plan = init_plan(model, policy)
    apply_plan(model, plan, generator, "initkit: initializing")
    return plan
