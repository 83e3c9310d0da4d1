"""Headless command line: `python -m analysis {report,bench,plan,evaluate,apply} ...`.

Bad arguments or input exit non-zero with one clear line on stderr.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis import store


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        raise UsageError(message)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="'default', a hub name, a local dir or a .gguf file")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: automatic)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])


def add_corpus_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--corpus", required=required, help="a text file, or builtin:all / builtin:<name>")
    p.add_argument("--seq-len", type=positive_int, required=required)
    p.add_argument("--max-windows", type=positive_int, default=None)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m analysis", description="Layer Lab headless analyses")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    rep = sub.add_parser("report", help="run the analyses and write report.json")
    add_model_args(rep)
    add_corpus_args(rep)
    rep.add_argument("--eps", type=float, default=0.01)
    rep.add_argument("--skip-removal", action="store_true", help="leave out the 3L removal sweep")
    rep.add_argument("--skip-lens", action="store_true", help="leave out the logit lens and early exit")
    rep.add_argument("--out", required=True)
    prep = sub.add_parser("prepare", help="convert the embedded default model into cache/ (once)")
    prep.add_argument("--model", default="default")
    bench = sub.add_parser("bench", help="print speed ratios against baselines measured in the same run")
    add_model_args(bench)
    bench.add_argument("--corpus", default="builtin:all")
    bench.add_argument("--seq-len", type=positive_int, default=128)
    bench.add_argument("--max-windows", type=positive_int, default=None)
    bench.add_argument("--repeats", type=positive_int, default=3)
    bench.add_argument("--parts", default="pass,sweep,toggle",
                       help="comma-separated subset of pass, sweep, toggle (default: all three)")
    from analysis import plan_cli
    plan_cli.add_commands(sub, add_model_args, add_corpus_args)
    return parser


def load_model(args):
    from analysis.loading import get_model

    def progress(frac, message):
        print(f"[{frac:4.0%}] {message}", file=sys.stderr)

    return get_model(args.model, args.device, args.dtype, progress=progress)


def cmd_report(args) -> int:
    from analysis.corpus import load_file
    from analysis.pipeline import analyse
    from analysis.removal import removal_cost
    from analysis.report import build_report

    if not 0 < args.eps < 10:
        raise UsageError("--eps must be between 0 and 10")
    corpus = load_file(args.corpus)
    model = load_model(args)
    progress = lambda frac, msg: print(f"[{frac:4.0%}] {msg}", file=sys.stderr)
    analysis = analyse(model, corpus, args.seq_len, max_windows=args.max_windows, eps=args.eps,
                       with_lens=not args.skip_lens, progress=progress)
    removal = None if args.skip_removal else removal_cost(model, corpus, args.seq_len,
                                                          max_windows=args.max_windows, progress=progress)
    report = build_report(analysis, removal, eps=args.eps)
    store.write_json_atomic(Path(args.out), report)
    print(f"perplexity {report['perplexity']:.4f} over {report['corpus']['n_predicted_tokens']} tokens -> {args.out}")
    return 0


def cmd_prepare(args) -> int:
    from analysis.loading import resolve_source
    path, _ = resolve_source(args.model, lambda f, m: print(f"[{f:4.0%}] {m}", file=sys.stderr))
    print(f"model ready at {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from analysis.corpus import CorpusError
    from analysis.loading import ModelLoadError

    try:
        args = build_parser().parse_args(argv)
        handler = {"report": cmd_report, "bench": _bench, "prepare": cmd_prepare}.get(args.command)
        if handler is None:
            from analysis import plan_cli
            handler = plan_cli.HANDLERS[args.command]
        return handler(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (CorpusError, ModelLoadError, OSError, ValueError) as err:
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 1


def _bench(args) -> int:
    from analysis.bench import run_bench
    return run_bench(args, load_model(args))
