"""CLI commands for pruning plans: `plan` (suggest one), `evaluate` (perplexity with and
without it) and `apply` (write the smaller checkpoint and time it).

    python -m analysis plan --model default --method reverse_order --target 3 \\
        [--corpus FILE --seq-len N --max-windows K [--eval-corpus holdout|FILE]] --out plan.json \\
        [--mergekit plan.yaml [--mergekit-model REF]]
    python -m analysis plan --from-mergekit pruneme.yaml [--model M] [--corpus ...] --out plan.json
    python -m analysis evaluate --plan plan.json --corpus FILE --seq-len N [--max-windows K] [--model M]
    python -m analysis apply --plan plan.json --out DIR [--model M] [--mergekit plan.yaml [--mergekit-model REF]]

An invalid plan file exits non-zero with one line naming every problem.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from analysis.core import store
from analysis.data.corpus import plural
from analysis.cli.args import (UsageError, add_corpus_args, add_eval_args, add_model_args, corpus_windows, load_model,
                               positive_int, progress, split_for, warn, write_text)
from analysis.search.presets import DESCRIPTIONS, METHODS

NEEDS_ANALYSIS = ("lowest_block_influence", "best_contiguous_block", "redundant_attention", "redundant_mlp")
LATENCY_CORPUS, LATENCY_SEQ_LEN, LATENCY_WINDOWS = "builtin:all", 128, 4


def read_plan(path: str, model=None, show_warnings: bool = True):
    """A validated plan from a file; ValueError with every problem on one line otherwise."""
    from analysis.plans.check import parse_plan

    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read plan file {path}: {err.strerror or err}") from err
    check = parse_plan(raw, model)
    if check.errors:
        raise ValueError(f"invalid plan {path}: {check.message()}")
    if show_warnings:
        warn(check.warnings)
    return check.plan


def _removal_text(removal) -> str:
    d = removal.to_dict()
    return f"blocks {d['blocks']} attn {d['attn']} mlp {d['mlp']}"


def model_reference(text: str) -> str:
    """--mergekit-model: a hub name or a path, on one line."""
    text = text.strip()
    if not text or "\n" in text or "\r" in text:
        raise argparse.ArgumentTypeError("give a hub name or a path on one line")
    return text


def _check_mergekit(args) -> None:
    if args.mergekit_model is not None and not args.mergekit:
        raise UsageError("--mergekit-model names the model in the MergeKit YAML: give --mergekit FILE too")


def _write_mergekit(args, plan, model) -> None:
    """The MergeKit config when asked, naming --mergekit-model or else a reference that
    works elsewhere (LoadedModel.shareable_reference: the hub name for the default model,
    whose weights here are dequantised from GGUF, as its comment says)."""
    from analysis.plans.mergekit import mergekit_yaml

    if args.mergekit:
        reference = args.mergekit_model or model.shareable_reference()
        write_text(args.mergekit, mergekit_yaml(plan, reference, model.hf_model, weights=model.weights))
        print(f"MergeKit passthrough config ({reference}) -> {args.mergekit}")


def add_mergekit_args(parser) -> None:
    parser.add_argument("--mergekit", default=None, help="also write a MergeKit passthrough YAML here")
    parser.add_argument("--mergekit-model", default=None, type=model_reference, metavar="REF",
                        help="the model the MergeKit YAML builds from (a hub name or a path; default: the hub name "
                             "for the default model, else the model's hub name or directory)")


def cmd_plan(args) -> int:
    from analysis.search.presets import suggest

    _check_mergekit(args)
    if args.corpus is not None and args.seq_len is None:
        raise UsageError("--seq-len is required with --corpus")
    if args.from_mergekit:
        if args.method or args.target:
            raise UsageError("--from-mergekit takes the removals from the config: leave out --method and --target")
        return _plan_from_mergekit(args)
    if args.method is None or args.target is None:
        raise UsageError("give --method and --target (or --from-mergekit FILE)")
    if args.corpus is None and args.method != "reverse_order":
        raise UsageError(f"method {args.method} needs a calibration text: give --corpus FILE --seq-len N")
    args.model = args.model or "default"
    model = load_model(args)
    analysis = cost = greedy = split = None
    if args.corpus is not None:
        from analysis.data.corpus import load_file
        split = split_for(model, args, load_file(args.corpus))
    if args.method in NEEDS_ANALYSIS:
        from analysis.measure.pipeline import analyse
        analysis = analyse(model, split.corpus, args.seq_len, max_windows=args.max_windows, with_lens=False,
                           progress=progress, part=split.calibration_part)
    elif args.method == "cheapest_measured":
        from analysis.ablate.sweep import removal_cost
        cost = removal_cost(model, split.corpus, args.seq_len, max_windows=args.max_windows, progress=progress,
                            part=split.calibration_part)
    elif args.method == "iterative_greedy":
        from analysis.search.greedy import greedy_order
        greedy = greedy_order(model, split.corpus, args.seq_len, args.max_windows, split.calibration_part, "blocks",
                              args.target, progress=progress).order
    removal = suggest(args.method, args.target, model.n_layers, similarity=analysis and analysis.similarity,
                      sublayers=analysis and analysis.sublayers, removal_cost=cost, greedy_order=greedy)
    parameters = {"k": args.target}
    if args.corpus is not None:
        parameters |= {"corpus": split.corpus.corpus_id if split.corpus.corpus_id.startswith("builtin:")
                       else args.corpus, "seq_len": args.seq_len, "max_windows": args.max_windows,
                       "eval": str(split.spec)}
    return _write_plan(args, model, removal, args.method, parameters, split)


def _plan_from_mergekit(args) -> int:
    """`plan --from-mergekit FILE`: a passthrough config that only drops layers -> a plan."""
    from analysis.model.removal import Removal
    from analysis.plans.mergekit import dropped_blocks, read_passthrough

    try:
        text = Path(args.from_mergekit).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {args.from_mergekit}: {getattr(err, 'strerror', None) or err}") from err
    try:
        source, ranges = read_passthrough(text)
    except ValueError as err:
        raise ValueError(f"{args.from_mergekit} cannot become a Layer Lab plan: {err}") from err
    if args.model is not None and args.model != source:
        warn([f"the config builds from {source!r}; the plan is made for --model {args.model!r}"])
    args.model = args.model or source
    model = load_model(args)
    try:
        removal = Removal.of(blocks=dropped_blocks(ranges, model.n_layers))
    except ValueError as err:
        raise ValueError(f"{args.from_mergekit} does not fit {args.model}: {err}") from err
    split = None
    if args.corpus is not None:
        from analysis.data.corpus import load_file
        split = split_for(model, args, load_file(args.corpus))
    parameters = {"source": source, "layer_ranges": [list(r) for r in ranges]}
    return _write_plan(args, model, removal, "mergekit_passthrough", parameters, split)


def _write_plan(args, model, removal, method: str, parameters: dict, split) -> int:
    """Evaluate `removal` on the split's evaluation windows when a corpus is given (see
    plan_evaluation), write the plan (and the MergeKit config when asked) and print what
    was written."""
    from analysis.plans.schema import make_plan

    evaluation = plan_evaluation(model, split, removal, args) if split is not None else None
    plan = make_plan(model, removal, method, parameters, evaluation)
    store.write_json_atomic(Path(args.out), plan.to_dict())
    print(f"plan ({method}): remove {_removal_text(removal)} -> {args.out}")
    if evaluation:
        print(f"perplexity full {evaluation['perplexity_full']:.6f} pruned {evaluation['perplexity_pruned']:.6f} "
              f"over {plural(evaluation['n_windows'], evaluation['windows'] + ' window')} x {args.seq_len} tokens")
        if calibration := evaluation.get("calibration"):
            print(f"on the {plural(calibration['n_windows'], 'calibration window')} it was chosen on: full "
                  f"{calibration['perplexity_full']:.6f} pruned {calibration['perplexity_pruned']:.6f}")
    _write_mergekit(args, plan, model)
    return 0


def plan_evaluation(model, split, removal, args) -> dict:
    """Perplexity with and without `removal` on the evaluation windows (and on the
    calibration windows next to it); on every window when nothing is held out."""
    from analysis.data.evaluation import split_windows_of
    from analysis.plans.apply import evaluate
    from analysis.plans.schema import calibration_numbers, plan_evaluation as evaluation_of

    calibration_windows, evaluation_windows = split_windows_of(model, split, args.seq_len, args.max_windows)
    calib_full, calib_pruned = evaluate(model, removal, calibration_windows)
    shape = (args.seq_len, args.max_windows)
    if evaluation_windows is None:
        return evaluation_of(split.corpus, split, *shape, "calibration", calib_full, calib_pruned,
                             calibration_windows.shape[0])
    full, pruned = evaluate(model, removal, evaluation_windows)
    return evaluation_of(split.corpus, split, *shape, "evaluation", full, pruned, evaluation_windows.shape[0],
                         calibration_numbers(split.corpus, calibration_windows.shape[0], calib_full, calib_pruned))


def _model_for(args, plan):
    if args.model is None:
        args.model = plan.model["name"]
    model = load_model(args)
    read_plan(args.plan, model)  # re-check against the loaded model (layers, name, fingerprint)
    return model


def cmd_evaluate(args) -> int:
    from analysis.plans.apply import evaluate

    plan = read_plan(args.plan, show_warnings=False)
    model = _model_for(args, plan)
    corpus, windows = corpus_windows(model, args)
    full, pruned = evaluate(model, plan, windows)
    print(f"perplexity full {full:.6f} pruned {pruned:.6f} (x{pruned / full:.3f}) over {plural(windows.shape[0], 'window')} "
          f"x {args.seq_len} tokens; remove {_removal_text(plan.removal())}")
    return 0


def cmd_apply(args) -> int:
    from analysis.model.sources import resolve_source
    from analysis.plans.apply import apply_plan, measure_latency

    _check_mergekit(args)
    if args.corpus is not None and args.seq_len is None:
        raise UsageError("--seq-len is required with --corpus")
    plan = read_plan(args.plan, show_warnings=False)
    model = _model_for(args, plan)
    source = model.source_dir or resolve_source(model.name)[0]
    out = apply_plan(plan, source, args.out)
    print(f"pruned checkpoint ({plan.n_layers - len(plan.remove['blocks'])} of {plan.n_layers} blocks) -> {out}")
    _write_mergekit(args, plan, model)
    args.corpus = args.corpus or LATENCY_CORPUS
    args.seq_len = args.seq_len or LATENCY_SEQ_LEN
    args.max_windows = args.max_windows or LATENCY_WINDOWS
    _, windows = corpus_windows(model, args)
    lat = measure_latency(source, out, windows, repeats=args.repeats)
    print(f"latency on this machine ({plural(windows.shape[0], 'window')} x {windows.shape[1]} tokens, median of "
          f"{lat['repeats']}): full {lat['full_seconds']:.3f} s, pruned {lat['pruned_seconds']:.3f} s, "
          f"ratio pruned/full {lat['ratio']:.2f}; parameters {lat['full_params']:,} -> {lat['pruned_params']:,}")
    zeroed = {k: [l for l in plan.remove[k] if l not in set(plan.remove["blocks"])] for k in ("attn", "mlp")}
    if zeroed["attn"] or zeroed["mlp"]:
        print(f"note: zeroed sublayers (attn {zeroed['attn']}, mlp {zeroed['mlp']}) keep their weights and save "
              "no compute; only removed blocks make the model faster")
    else:
        print("note: only removed blocks save compute; zeroed sublayers (none in this plan) would not")
    return 0


def add_command(sub) -> None:
    plan = sub.add_parser("plan", help="suggest a pruning plan (or convert a MergeKit drop) and write it as JSON")
    add_model_args(plan)
    plan.set_defaults(model=None)
    add_corpus_args(plan, required=False)
    plan.add_argument("--method", choices=METHODS, help="; ".join(f"{m}: {d}" for m, d in DESCRIPTIONS.items()))
    plan.add_argument("--target", type=positive_int, help="how many components to remove (k)")
    plan.add_argument("--from-mergekit", default=None, metavar="YAML",
                      help="turn a MergeKit passthrough config that only drops layers of one model into a plan")
    add_eval_args(plan)
    plan.add_argument("--out", required=True, help="where to write plan.json")
    add_mergekit_args(plan)
    plan.set_defaults(handler=cmd_plan)
    ev = sub.add_parser("evaluate", help="corpus perplexity with and without a plan")
    add_model_args(ev)
    ev.set_defaults(model=None)
    add_corpus_args(ev)
    ev.add_argument("--plan", required=True)
    ev.set_defaults(handler=cmd_evaluate)
    ap = sub.add_parser("apply", help="write the pruned checkpoint and measure its latency")
    add_model_args(ap)
    ap.set_defaults(model=None)
    add_corpus_args(ap, required=False)
    ap.add_argument("--plan", required=True)
    ap.add_argument("--out", required=True, help="directory for the pruned checkpoint")
    add_mergekit_args(ap)
    ap.add_argument("--repeats", type=positive_int, default=3, help="timed forwards per model (median)")
    ap.set_defaults(handler=cmd_apply)
