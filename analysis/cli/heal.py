"""`python -m analysis heal`: heal a pruned model with LoRA and measure what comes back.

    python -m analysis heal --plan plan.json --corpus C --seq-len N [--max-windows K] \\
        [--eval-corpus E] [--steps S] [--rank r] [--alpha A] [--lr LR] [--batch-size B] \\
        [--warmup-steps W] [--seed X] [--repeats R] [--model M] --out healed/

Trains on the calibration windows of C (every 5th window held out for evaluation, or all
of C when --eval-corpus names the evaluation text), shows a progress bar with the loss,
prints the perplexity of the full, pruned and healed model on both splits and writes a
merged plain Hugging Face checkpoint with the plan (now carrying a `healing` section) and
the JSON record `layer-lab-heal.json`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from analysis.cli.args import (UsageError, add_corpus_args, add_model_args, corpus_windows, non_negative_int,
                               positive_float, positive_int, progress)
from analysis.data.corpus import plural
from analysis.heal.train import HealSettings

DEFAULTS = HealSettings()


def _windows(model, args):
    """(calibration, evaluation, info) from --corpus and the held-out split or --eval-corpus."""
    from analysis.data.corpus import load_file, split_windows
    from analysis.data.evaluation import windows_for
    from analysis.heal.train import check_disjoint

    corpus, windows = corpus_windows(model, args)
    info = {"corpus_sha256": corpus.sha256, "max_windows": args.max_windows}
    if args.eval_corpus is None:
        calibration, evaluation = split_windows(windows)
        return calibration, evaluation, info | {"evaluation_source": "every 5th window held out"}
    other = load_file(args.eval_corpus)
    evaluation = windows_for(model, other, args.seq_len, args.max_windows)
    check_disjoint(windows, evaluation)
    return windows, evaluation, info | {"evaluation_source": "evaluation corpus",
                                        "eval_corpus_sha256": other.sha256}


class StepBar:
    """A tqdm progress bar over the training steps, showing the latest loss."""

    def __init__(self, steps: int) -> None:
        from tqdm import tqdm
        self.bar = tqdm(total=steps, desc="healing", unit="step", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, step: int, loss: float) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}")

    def close(self) -> None:
        self.bar.close()


def cmd_heal(args) -> int:
    from analysis.cli.plans import _model_for, read_plan
    from analysis.plans.apply import _is_our_checkpoint
    from analysis.heal.train import HealResult, heal
    from analysis.heal.run import LATENCY_WINDOWS, RECORD_FILE, forward_times, write_checkpoint

    settings = HealSettings(steps=args.steps, rank=args.rank, alpha=args.alpha, lr=args.lr,
                            batch_size=args.batch_size, warmup_steps=args.warmup_steps, seed=args.seed)
    problems = settings.problems()
    if problems:
        raise UsageError("; ".join(problems))
    out = Path(args.out).expanduser().resolve()
    if out.exists() and not _is_our_checkpoint(out):
        raise UsageError(f"{out} exists and is not a Layer Lab checkpoint; choose another --out")
    plan = read_plan(args.plan, show_warnings=False)
    if not plan.remove["blocks"] and not plan.remove["attn"] and not plan.remove["mlp"]:
        raise UsageError("the plan removes nothing: there is nothing to heal")
    model = _model_for(args, plan)
    calibration, evaluation, info = _windows(model, args)
    print(f"healing on {plural(calibration.shape[0], 'calibration window')}, evaluating on {evaluation.shape[0]} "
          f"({info['evaluation_source']}), {args.seq_len} tokens each; {settings}", file=sys.stderr)
    bar = StepBar(settings.steps)
    try:
        result, merged = heal(model, plan.removal(), calibration, evaluation, settings, windows_info=info,
                              progress=lambda f, m: bar.bar.write(m), on_step=bar)
    finally:
        bar.close()
    progress(0.95, f"timing full, pruned and healed forwards ({LATENCY_WINDOWS} windows, median of {args.repeats})")
    latency = forward_times(model, plan.removal(), merged, evaluation[:LATENCY_WINDOWS], args.repeats)
    result = HealResult.from_dict(result.to_dict() | {"latency": latency})
    write_checkpoint(merged, model, plan, result, out)
    for row in result.table():
        ratio = row["forward-time ratio"]
        print(f"{row['model']:>6}: perplexity calibration {row['calibration perplexity']:.4f}, evaluation "
              f"{row['evaluation perplexity']:.4f}; {row['parameters']:,} parameters; forward time x{ratio:.2f}")
    print(f"{settings.steps} steps in {result.train_seconds:.1f} s ({result.steps_per_second:.3f} steps/s), "
          f"whole run {result.wall_seconds:.1f} s; loss {result.loss_curve[0]:.4f} -> {result.loss_curve[-1]:.4f}")
    step = result.train_seconds / settings.steps
    print(f"one training step ({settings.batch_size} windows) took {step / latency['full_seconds']:.2f}x a full-model "
          f"forward over {LATENCY_WINDOWS} windows ({latency['full_seconds']:.2f} s) measured in this run")
    print(f"healed checkpoint -> {out} (record: {out / RECORD_FILE})")
    return 0


def add_command(sub) -> None:
    p = sub.add_parser("heal", help="heal a pruned model with LoRA on the calibration windows")
    add_model_args(p)
    p.set_defaults(model=None)
    add_corpus_args(p)
    p.add_argument("--plan", required=True)
    p.add_argument("--eval-corpus", default=None, help="evaluation text (default: every 5th window of --corpus)")
    p.add_argument("--steps", type=positive_int, default=DEFAULTS.steps)
    p.add_argument("--rank", type=positive_int, default=DEFAULTS.rank, help="LoRA rank r")
    p.add_argument("--alpha", type=positive_float, default=DEFAULTS.alpha, help="LoRA alpha (scale alpha / r)")
    p.add_argument("--lr", type=positive_float, default=DEFAULTS.lr, help="peak learning rate (AdamW)")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULTS.batch_size, help="windows per step")
    p.add_argument("--warmup-steps", type=non_negative_int, default=DEFAULTS.warmup_steps)
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--repeats", type=positive_int, default=3, help="timed forwards per model (median)")
    p.add_argument("--out", required=True, help="directory for the healed checkpoint")
    p.set_defaults(handler=cmd_heal)
