"""Command line: `python -m initkit <command>` (also the `initkit` console script)."""

import argparse
import sys

import torch


def _bench(args: argparse.Namespace) -> int:
    from . import _bench, backend

    print(f"initkit fill speed: torch {torch.__version__}, {torch.get_num_threads()} threads, backend {backend()}")
    print("Medians of repeated runs, side by side; 'of zero_' = fraction of zero_'s throughput (the bandwidth floor).")
    rows = _bench.run(min_time=args.min_time)
    print(_bench.markdown_table(rows) if args.markdown else _bench.format_table(rows))
    from . import _bench_linear, _bench_model

    print(_bench_model.format_rows(_bench_model.model_init_rows()))
    print(_bench_linear.format_rows(_bench_linear.rows(quick=args.quick)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="initkit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench", help="compare initkit's fills with torch.nn.init and zero_")
    bench.add_argument("--min-time", type=float, default=0.3, help="seconds of timing per measurement")
    bench.add_argument("--markdown", action="store_true", help="print the README's table format")
    bench.add_argument("--quick", action="store_true", help="fewer Linear+ReLU shapes")
    bench.set_defaults(handler=_bench)
    from . import _cli_model

    _cli_model.add_subcommands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
