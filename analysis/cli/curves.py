"""`python -m analysis curves`: pruning curves on held-out text and the dynamic-depth
oracle, written as curves.json (README, "Pruning curves").

    python -m analysis curves --model M --corpus C --seq-len N [--max-windows K]
        [--eval-corpus holdout|FILE|builtin:<name>] [--seeds 5] [--tolerance 0]
        [--kinds blocks,attn,mlp] [--k-max K] --out curves.json
"""
from __future__ import annotations

from pathlib import Path

from analysis.core import store
from analysis.data.corpus import plural
from analysis.cli.args import (UsageError, add_corpus_args, add_eval_args, add_model_args, load_model, positive_int,
                               progress, split_for)


def add_command(sub) -> None:
    p = sub.add_parser("curves", help="pruning curves (calibration -> evaluation) and the dynamic-depth oracle")
    add_model_args(p)
    add_corpus_args(p)
    add_eval_args(p)
    p.add_argument("--seeds", type=positive_int, default=5, help="random-baseline seeds (at least 5)")
    p.add_argument("--tolerance", type=float, default=0.0,
                   help="oracle budget: mean NLL <= full + tolerance (nats, default 0)")
    p.add_argument("--kinds", default="blocks,attn,mlp", help="comma-separated subset of blocks, attn, mlp")
    p.add_argument("--k-max", type=positive_int, default=None,
                   help="curves for k = 1..K removed (default L-1; a smaller K saves most of the greedy's work)")
    p.add_argument("--out", required=True)
    p.set_defaults(handler=cmd_curves)


def check_options(args) -> list[str]:
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or set(kinds) - {"blocks", "attn", "mlp"}:
        raise UsageError(f"--kinds must name some of blocks, attn, mlp, not {args.kinds!r}")
    if args.seeds < 5:
        raise UsageError("--seeds must be at least 5 (the random baseline's 10-90% band needs them)")
    if not 0 <= args.tolerance < 100:
        raise UsageError("--tolerance must be between 0 and 100 nats")
    return kinds


def cmd_curves(args) -> int:
    from analysis.data.corpus import load_file
    from analysis.search.curves_run import pruning_curves

    kinds = check_options(args)
    corpus = load_file(args.corpus)
    model = load_model(args)
    if args.k_max is not None and args.k_max >= model.n_layers:
        raise UsageError(f"--k-max must be 1..{model.n_layers - 1} for a model with {model.n_layers} layers")
    split = split_for(model, args, corpus)
    if not split.available:
        raise UsageError("no evaluation windows; give --eval-corpus with a disjoint text or use more windows")
    result = pruning_curves(model, split, args.seq_len, args.max_windows, seeds=args.seeds, tolerance=args.tolerance,
                            kinds=kinds, progress=progress, k_max=args.k_max)
    store.write_json_atomic(Path(args.out), result.to_dict())
    summary(result)
    print(f"-> {args.out}")
    return 0


def summary(result) -> None:
    """Winners at k = 3, 6, 9 (when there are so many layers) and the oracle fractions."""
    L = result.model["n_layers"]
    print(f"full model: calibration perplexity {result.full_ppl['calibration']:.4f}, evaluation "
          f"{result.full_ppl['evaluation']:.4f} ({plural(result.split['n_calibration_windows'], 'calibration window')}"
          f" / {plural(result.split['n_evaluation_windows'], 'evaluation window')}, eval={result.split['eval']})")
    for kind in result.kinds():
        for k in (3, 6, 9):
            if k >= L or k > len(result.greedy[kind]["order"]):
                continue
            rows = result.winners(kind, k)
            best, second = rows[0], rows[1] if len(rows) > 1 else None
            gap = f", next {second['method']} {second['eval_ppl']:.3f}" if second else ""
            print(f"{kind} k={k}: best {best['method']} eval ppl {best['eval_ppl']:.3f} "
                  f"(calibration {best['calib_ppl']:.3f}){gap}")
    depth = result.dynamic_depth
    for family in (depth.skipping, depth.early_exit):
        frac = "none" if family.mean_fraction is None else f"{family.mean_fraction:.3f}"
        print(f"dynamic-depth oracle ({family.family}): mean fraction of blocks {frac} at tolerance "
              f"{depth.tolerance:g} nats (paper, skipping on OPT-1.3B: {depth.paper_skip_fraction:.3f})")
