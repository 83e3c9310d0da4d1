"""Headless command line: `python -m analysis {prepare,report,bench,plan,evaluate,apply,heal,curves,tasks} ...`.

Each subcommand lives in its own module exposing `add_command(sub)` (which registers its
parser and handler); bad arguments or input exit non-zero with one clear line on stderr.
"""
from __future__ import annotations

import sys

from analysis.cli import bench, curves, heal, plans, report, tasks
from analysis.cli.args import Parser, UsageError

COMMANDS = (report, plans, heal, curves, tasks, bench)


def build_parser() -> Parser:
    parser = Parser(prog="python -m analysis", description="Layer Lab headless analyses")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in COMMANDS:
        module.add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from analysis.data.corpus import CorpusError
    from analysis.model.sources import ModelLoadError

    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (CorpusError, ModelLoadError, OSError, ValueError) as err:
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 1
