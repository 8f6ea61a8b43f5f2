"""The command line: `initkit <command>` (also `python -m initkit`): demo, summary, diagnose, bench.

Each subcommand sets `handler`, a function taking the parsed arguments and returning the exit
status.
"""

import argparse
import importlib
import os
import sys
import tempfile

import torch
from torch import nn

from .bench.timing import median_seconds
from .model import diagnose as _diagnose
from .model import summary as _summary
from .model.apply import initialize
from .model.fuse import fuse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="initkit", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    demo = subparsers.add_parser("demo", help="init, summary, TorchScript and fused vs eager on a tiny MLP")
    demo.set_defaults(handler=run_demo)

    summary = subparsers.add_parser("summary", help="torchinfo-style summary of MODULE:FACTORY")
    summary.add_argument("target", metavar="MODULE:FACTORY", help="e.g. mypkg.models:build (called without arguments)")
    summary.add_argument("--input-size", type=int, nargs="+", metavar="N", help="input shape, e.g. --input-size 2 4")
    summary.add_argument("--dtype", default=None, help="input dtype, e.g. float32 or int64 (token ids)")
    summary.add_argument("--depth", type=int, default=3)
    summary.set_defaults(handler=run_summary)

    diagnose = subparsers.add_parser("diagnose", help="std per layer of a deep MLP under an init")
    diagnose.add_argument("--depth", type=int, default=30)
    diagnose.add_argument("--width", type=int, default=128)
    diagnose.add_argument("--activation", choices=["tanh", "relu"], default="tanh")
    diagnose.add_argument("--init", choices=_diagnose.DEPTH_INITS, action="append", help="repeat to compare several")
    diagnose.add_argument("--batch", type=int, default=256)
    diagnose.add_argument("--plot", metavar="PNG", help="also save a plot (needs matplotlib)")
    diagnose.set_defaults(handler=run_diagnose)

    bench = subparsers.add_parser("bench", help="compare initkit's fills and fused layers with torch and the floors")
    bench.add_argument("--budget", type=float, default=0.9, help="seconds of timing per fill comparison")
    bench.add_argument("--markdown", action="store_true", help="print the README's table format")
    bench.add_argument("--quick", action="store_true", help="fewer Linear+ReLU shapes")
    bench.set_defaults(handler=run_bench)
    return parser


def _load_factory(target: str):
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected MODULE:FACTORY, got {target!r}")
    if os.getcwd() not in sys.path:  # the console script does not put the working directory on the path
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    try:
        factory = getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"{module_name} has no attribute {attribute!r}") from None
    if not (isinstance(factory, nn.Module) or callable(factory)):
        raise TypeError(f"{target} is a {type(factory).__name__}, not an nn.Module or a function returning one")
    model = factory if isinstance(factory, nn.Module) else factory()
    if not isinstance(model, nn.Module):
        raise TypeError(f"{target} gave a {type(model).__name__}, not an nn.Module")
    return model


def run_summary(args: argparse.Namespace) -> int:
    try:
        model = _load_factory(args.target)
        dtypes = None
        if args.dtype is not None:
            dtype = getattr(torch, args.dtype, None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"unknown dtype {args.dtype!r}")
            dtypes = [dtype]
        result = _summary.summary(model, input_size=args.input_size, depth=args.depth, dtypes=dtypes)
    except (ImportError, ValueError, TypeError) as error:
        print(f"initkit summary: {error}", file=sys.stderr)
        return 2
    print(result)
    return 0


def run_diagnose(args: argparse.Namespace) -> int:
    try:
        report = _diagnose.diagnose_depth(
            depth=args.depth,
            width=args.width,
            activation=args.activation,
            init=args.init or ("zeros", "normal", "xavier_normal", "kaiming_normal"),
            batch=args.batch,
            plot=args.plot,
        )
    except (ImportError, ValueError) as error:
        print(f"initkit diagnose: {error}", file=sys.stderr)
        return 2
    print(report)
    if args.plot:
        print(f"plot saved to {args.plot}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    torch.manual_seed(0)
    print("== 1. A 4 -> 5 -> 3 -> 2 MLP, Kaiming init in one pass ==")
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2))
    policy = "kaiming_normal"
    plan = initialize(model, policy)
    print(plan)

    print("\n== 2. Summary ==")
    print(_summary.summary(model, input_size=(2, 4), policy=policy))

    print("\n== 3. state_dict and named_parameters ==")
    print(_summary.param_report(model))

    print("\n== 4. Init statistics: measured std vs the scheme's ==")
    params = dict(model.named_parameters())
    for row in plan:
        if row.std:
            print(f"{row.name}: std {float(params[row.name].detach().std()):.4f}, scheme std {row.std:.4f}")

    x = torch.randn(2, 4)
    print(f"\n== 5. Forward: input {list(x.shape)} -> output {list(model(x).shape)} ==")

    print("\n== 6. TorchScript: script, save, load ==")
    scripted = torch.jit.script(model)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "mlp.pt")
        scripted.save(path)
        loaded = torch.jit.load(path)
        same = torch.equal(loaded(x), model(x))
        print(f"saved {os.path.getsize(path)} bytes to {path}; loaded output equals eager: {same}")

    print("\n== 7. Fused vs eager forward ==")
    fused = fuse(model)  # each Linear followed by ReLU becomes one FusedLinearReLU, same weights
    for batch_size in (2, 256):
        batch = torch.randn(batch_size, 4)
        same = torch.allclose(fused(batch), model(batch), rtol=1e-6, atol=1e-6)
        with torch.no_grad():  # side by side, medians over rounds: stable on a busy machine
            t = median_seconds({"fused": lambda: fused(batch), "eager": lambda: model(batch)}, budget_s=0.5)
        fused_s, eager_s = t["fused"], t["eager"]
        print(
            f"batch {batch_size}: fused {fused_s * 1e6:.1f} us, eager {eager_s * 1e6:.1f} us, "
            f"speedup {eager_s / fused_s:.2f}x, outputs equal: {same}"
        )
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from ._ext.backend import backend
    from .bench import dense, fills, models

    print(f"initkit fill speed: torch {torch.__version__}, {torch.get_num_threads()} threads, backend {backend()}")
    print("Medians of repeated runs, side by side; 'of zero_' = fraction of zero_'s throughput (the bandwidth floor).")
    rows = fills.run(budget_s=args.budget)
    print(fills.markdown_table(rows) if args.markdown else fills.format_table(rows))
    print(models.format_rows(models.model_init_rows()))
    print(dense.format_rows(dense.rows(quick=args.quick)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)
