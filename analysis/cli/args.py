"""Argument helpers and progress printers shared by every subcommand."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


class UsageError(Exception):
    """Bad command-line usage; printed as one `error:` line, exit 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        raise UsageError(message)


def _int_at_least(text: str, minimum: int, words: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {words}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="'default', a hub name, a local dir or a .gguf file")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: automatic)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])


def add_corpus_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--corpus", required=required, help="a text file, or builtin:all / builtin:<name>")
    p.add_argument("--seq-len", type=positive_int, required=required)
    p.add_argument("--max-windows", type=positive_int, default=None)


def progress(frac: float, message: str) -> None:
    """The progress printer every subcommand uses (stderr, so stdout stays the result)."""
    print(f"[{frac:4.0%}] {message}", file=sys.stderr)


def warn(lines) -> None:
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)


def load_model(args):
    from analysis.model.loading import get_model
    return get_model(args.model, args.device, args.dtype, progress=progress)


def corpus_windows(model, args):
    """(corpus, token windows) named by --corpus / --seq-len / --max-windows."""
    from analysis.data.corpus import load_file
    from analysis.data.evaluation import windows_for

    corpus = load_file(args.corpus)
    return corpus, windows_for(model, corpus, args.seq_len, args.max_windows)


def write_text(path: str, text: str) -> None:
    from analysis.core.store import write_text_atomic
    write_text_atomic(Path(path), text)


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval-corpus", default="holdout",
                   help="evaluation windows: 'holdout' (every 5th window of --corpus, the default), a text file, "
                        "or builtin:<name>")


def split_for(model, args, corpus):
    """The calibration/evaluation split named by --eval-corpus for `corpus` (a warning
    line when nothing can be held out, see evaluation.resolve)."""
    from analysis.data.corpus import load_file
    from analysis.data.evaluation import windows_for
    from analysis.data.evaluation import HOLDOUT, EvalSpec, resolve

    n = windows_for(model, corpus, args.seq_len, args.max_windows).shape[0]
    if args.eval_corpus.strip() == HOLDOUT:
        split = resolve(EvalSpec(), corpus, n)
    else:
        other = load_file(args.eval_corpus)
        split = resolve(EvalSpec(other.corpus_id), corpus, n, eval_corpus=other)
    if split.notice:
        warn([split.notice])
    return split
