"""The command line: `initkit <command>` (also `python -m initkit`): demo, summary, diagnose, bench.

Each subcommand sets `handler`, a function taking the parsed arguments and returning the exit
status. An error ends the command with one line on stderr and exit status 2; `--debug` (or
INITKIT_DEBUG=1) shows the traceback instead.
"""

import argparse
import functools
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


class CommandError(Exception):
    """A failure the command line explains in its message (no exception type shown)."""


def build_parser() -> argparse.ArgumentParser:
    description = "initkit's command line. An error ends a command with one line on stderr and exit status 2."
    parser = argparse.ArgumentParser(prog="initkit", description=description)
    debug_help = "show the traceback of an error (also INITKIT_DEBUG=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    # accepted after the subcommand too; SUPPRESS keeps a subcommand from resetting it to False
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_parser = functools.partial(subparsers.add_parser, parents=[common])
    demo = add_parser("demo", help="init, summary, TorchScript and fused vs eager on a tiny MLP")
    demo.set_defaults(handler=run_demo)

    summary = add_parser("summary", help="torchinfo-style summary of MODULE:FACTORY")
    summary.add_argument("target", metavar="MODULE:FACTORY", help="e.g. mypkg.models:build (called without arguments)")
    summary.add_argument("--input-size", type=int, nargs="+", metavar="N", help="input shape, e.g. --input-size 2 4")
    summary.add_argument("--dtype", default=None, help="input dtype, e.g. float32 or int64 (token ids)")
    summary.add_argument("--depth", type=int, default=3, help="levels of nested modules shown (default 3)")
    summary.set_defaults(handler=run_summary)

    diagnose = add_parser("diagnose", help="std per layer of a deep MLP under an init")
    diagnose.add_argument("--depth", type=int, default=30, help="Linear+activation blocks (default 30)")
    diagnose.add_argument("--width", type=int, default=128, help="features per layer (default 128)")
    diagnose.add_argument("--activation", choices=["tanh", "relu"], default="tanh")
    diagnose.add_argument("--init", choices=_diagnose.DEPTH_INITS, action="append", help="repeat to compare several")
    diagnose.add_argument("--batch", type=int, default=256, help="rows of the random input (default 256)")
    diagnose.add_argument("--plot", metavar="PNG", help="also save a plot (needs matplotlib)")
    diagnose.set_defaults(handler=run_diagnose)

    bench = add_parser("bench", help="compare initkit's fills and fused layers with torch and the floors")
    bench.add_argument("--budget", type=_positive_seconds, default=0.9, help="seconds of timing per fill comparison")
    bench.add_argument("--markdown", action="store_true", help="print the README's table format")
    bench.add_argument("--quick", action="store_true", help="fewer Linear+ReLU shapes")
    bench.add_argument(
        "--own-init", metavar="MODELS", default="gpt2,bert",
        help="models for the own-init section (comma-separated names of initkit.bench.own_init.MODELS, "
        "'all', or 'none'); models whose library is not installed are left out",
    )  # fmt: skip
    bench.set_defaults(handler=run_bench)
    return parser


def _positive_seconds(text: str) -> float:
    """An argparse type: a finite number of seconds > 0 (a negative budget never ends a timing loop)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive, finite number of seconds, got {text!r}")
    return value


def _load_factory(target: str):
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise CommandError(f"expected MODULE:FACTORY, got {target!r}")
    if os.getcwd() not in sys.path:  # the console script does not put the working directory on the path
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as error:  # noqa: BLE001  (whatever importing the user's module raises)
        raise CommandError(f"cannot import {module_name}: {_describe(error)}") from error
    try:
        factory = getattr(module, attribute)
    except AttributeError:
        raise CommandError(f"{module_name} has no attribute {attribute!r}") from None
    if not (isinstance(factory, nn.Module) or callable(factory)):
        raise CommandError(f"{target} is of type {type(factory).__name__}, not an nn.Module or a function returning one")
    if isinstance(factory, nn.Module):
        return factory
    try:
        model = factory()
    except (Exception, SystemExit) as error:  # noqa: BLE001  (whatever the user's factory raises)
        raise CommandError(f"{target}() raised {_describe(error)}") from error
    if not isinstance(model, nn.Module):
        raise CommandError(f"{target} gave a {type(model).__name__}, not an nn.Module")
    return model


def run_summary(args: argparse.Namespace) -> int:
    model = _load_factory(args.target)
    dtypes = None
    if args.dtype is not None:
        dtype = getattr(torch, args.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise CommandError(f"unknown dtype {args.dtype!r}")
        dtypes = [dtype]
    print(_summary.summary(model, input_size=args.input_size, depth=args.depth, dtypes=dtypes))
    return 0


def run_diagnose(args: argparse.Namespace) -> int:
    report = _diagnose.diagnose_depth(
        depth=args.depth,
        width=args.width,
        activation=args.activation,
        init=args.init or ("zeros", "normal", "xavier_normal", "kaiming_normal"),
        batch=args.batch,
        plot=args.plot,
    )
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
        # side by side, medians over rounds of short blocks (most escape preemption): stable on a busy machine
        with torch.no_grad():
            t = median_seconds({"fused": lambda: fused(batch), "eager": lambda: model(batch)}, budget_s=0.5, block_s=2e-4)
        fused_s, eager_s = t["fused"], t["eager"]
        print(
            f"batch {batch_size}: fused {fused_s * 1e6:.1f} us, eager {eager_s * 1e6:.1f} us, "
            f"speedup {eager_s / fused_s:.2f}x, outputs equal: {same}"
        )
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from ._ext.backend import backend
    from .bench import dense, fills, models, own_init, sharded

    chosen = [] if args.own_init == "none" else own_init.DEFAULT_MODELS if args.own_init == "all" else args.own_init.split(",")
    unknown = sorted(set(chosen) - set(own_init.MODELS))
    if unknown:
        raise ValueError(f"unknown --own-init models {unknown}; expected names from {sorted(own_init.MODELS)}")
    print(f"initkit fill speed: torch {torch.__version__}, {torch.get_num_threads()} threads, backend {backend()}")
    print("Medians of repeated runs, side by side; 'of zero_' = fraction of zero_'s throughput (the bandwidth floor).")
    rows = fills.run(budget_s=args.budget)
    print(fills.markdown_table(rows) if args.markdown else fills.format_table(rows))
    print(fills.format_overhead(fills.overhead_rows()))
    print(models.format_rows(models.model_init_rows()))
    print(models.format_rows(models.recorded_reinit_rows([m for m in chosen if m in ("gpt2", "bert")])))
    print(dense.format_rows(dense.rows(quick=args.quick)))
    print(sharded.format_rows(sharded.rows()))
    if chosen:
        print("A model's own init: plain construction vs initkit.patch() vs deferred_init + materialize vs the floor")
        print(own_init.format_rows(own_init.own_init_rows(chosen)))
    return 0


def _describe(error: BaseException) -> str:
    """One line: the exception's type (unless the message is the command line's own) and the
    first line of its message."""
    if isinstance(error, SystemExit):  # the user's code called sys.exit() (or argparse did): say so
        return f"SystemExit: it exited with status {error.code!r}"
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else ""
    return message if isinstance(error, CommandError) else f"{type(error).__name__}: {message}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("INITKIT_DEBUG") == "1"
    try:
        return args.handler(args)
    except BrokenPipeError:  # the reader left early (`initkit summary ... | head`): not the command's error
        # (Python's recipe: stdout to devnull, else the flush at exit raises it again)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as error:  # noqa: BLE001  (every failure becomes one line, unless debugging)
        if debug:
            raise
        print(f"initkit {args.command}: {_describe(error)} (--debug shows the traceback)", file=sys.stderr)
        return 2
