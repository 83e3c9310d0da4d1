"""`prepare` (convert the embedded default model once) and `report` (run every analysis
and write report.json)."""
from __future__ import annotations

from pathlib import Path

from analysis.core import store
from analysis.cli.args import (UsageError, add_corpus_args, add_eval_args, add_model_args, load_model, positive_int,
                               progress, split_for)


def add_command(sub) -> None:
    rep = sub.add_parser("report", help="run the analyses and write report.json")
    add_model_args(rep)
    add_corpus_args(rep)
    rep.add_argument("--eps", type=float, default=0.01)
    rep.add_argument("--skip-removal", action="store_true", help="leave out the 3L removal sweep")
    rep.add_argument("--skip-lens", action="store_true", help="leave out the logit lens and early exit")
    add_eval_args(rep)
    rep.add_argument("--curves", action="store_true",
                     help="add the pruning curves and the dynamic-depth oracle (long: see `curves`)")
    rep.add_argument("--seeds", type=positive_int, default=5, help="with --curves: random-baseline seeds (>= 5)")
    rep.add_argument("--tasks", default="", help="also judge the model on these lm-eval tasks (comma-separated; "
                                                  "offline: layerlab_agreement, layerlab_sequences)")
    rep.add_argument("--task-file", action="append", default=None, metavar="JSONL", help="a task file (see `tasks`)")
    rep.add_argument("--task-limit", type=positive_int, default=None, help="only the first N items of each task")
    rep.add_argument("--out", required=True)
    rep.add_argument("--html", default=None, help="also write a self-contained HTML report here")
    rep.set_defaults(handler=cmd_report)
    prep = sub.add_parser("prepare", help="convert the embedded default model into cache/ (once)")
    prep.add_argument("--model", default="default")
    prep.set_defaults(handler=cmd_prepare)


def cmd_report(args) -> int:
    from analysis.data.corpus import load_file
    from analysis.data.evaluation import split_windows_of
    from analysis.measure.pipeline import analyse
    from analysis.plans.apply import checkpoint_plan
    from analysis.ablate.sweep import removal_cost
    from analysis.reporting.report import build_report

    if not 0 < args.eps < 10:
        raise UsageError("--eps must be between 0 and 10")
    if args.curves and args.seeds < 5:
        raise UsageError("--seeds must be at least 5")
    corpus = load_file(args.corpus)
    taskset = _taskset(args)  # a bad task name or file fails before the long work
    model = load_model(args)
    split = split_for(model, args, corpus)
    if args.curves and not split.available:
        raise UsageError("--curves needs evaluation windows; give --eval-corpus with a disjoint text or more windows")
    part = split.calibration_part
    analysis = analyse(model, corpus, args.seq_len, max_windows=args.max_windows, eps=args.eps,
                       with_lens=not args.skip_lens, progress=progress, part=part)
    removal = None if args.skip_removal else removal_cost(model, corpus, args.seq_len,
                                                          max_windows=args.max_windows, progress=progress, part=part)
    curves = None
    if args.curves:
        from analysis.search.curves_run import pruning_curves
        curves = pruning_curves(model, split, args.seq_len, args.max_windows, seeds=args.seeds, progress=progress)
    tasks = None
    if taskset is not None:
        from analysis.model.removal import Removal
        from analysis.tasks.engine import evaluate_tasks
        tasks = evaluate_tasks(model, Removal(), taskset, limit=args.task_limit, progress=progress)
    calibration, evaluation = split_windows_of(model, split, args.seq_len, args.max_windows)
    info = split.info(calibration.shape[0], None if evaluation is None else evaluation.shape[0])
    report = build_report(analysis, removal, eps=args.eps, split=info, curves=curves,
                          plan=checkpoint_plan(model.source_dir), tasks=tasks)
    store.write_json_atomic(Path(args.out), report)
    print(f"perplexity {report['perplexity']:.4f} over {report['corpus']['n_predicted_tokens']} tokens -> {args.out}")
    if args.html:
        from analysis.reporting.html import html_report
        store.write_text_atomic(Path(args.html), html_report(report))
        print(f"HTML report ({Path(args.html).stat().st_size / 1e6:.2f} MB, opens offline) -> {args.html}")
    return 0


def _taskset(args):
    """The tasks of --tasks / --task-file (None when neither is given); a bad name or file
    raises TaskError / TaskFileError, ValueErrors the CLI prints as one line."""
    if not args.tasks.strip() and not args.task_file:
        return None
    from analysis.tasks.engine import resolve_tasks
    return resolve_tasks(args.tasks.split(","), args.task_file or ())


def cmd_prepare(args) -> int:
    from analysis.model.sources import resolve_source
    from analysis.measure import fused, pipeline  # noqa: F401 (pipeline imports, and so registers, every kernel)
    path, _ = resolve_source(args.model, progress)
    print(f"model ready at {path}")
    if fused.enabled():
        seconds = fused.warm_up()
        state = f"eager (compiling failed: {fused.failures()})" if fused.failures() else "compiled"
        print(f"fused reductions {state} in {seconds:.1f} s")
    return 0
