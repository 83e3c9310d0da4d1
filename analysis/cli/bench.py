"""`python -m analysis bench`: speed ratios against baselines measured in the same run.

- exact removal sweep with prefix re-use / naive sweep (one full forward per removal);
- instrumented pass / a bare `transformers` forward over the same windows (a separate,
  plain copy of the model, not the bridge), without and with the logit lens;
- median single-toggle update in the playground / one full forward over the same corpus;
- the logit lens against its own FLOP floor (a bare forward plus L unembeddings per
  predicted token, at the bare forward's FLOP rate);
- peak RSS of a whole `report` over 62 windows / over 32 windows (memory flat in corpus
  length), each in a fresh process with an empty result cache;
- curves: exact iterative greedy to k = L/2 / the full forwards a naive re-measurement
  of every candidate at every step would run, and the dynamic-depth knapsack for 100
  windows x 100 configurations / one second;
- generate: seconds per token of the playground's streamed greedy generation (full model,
  and with one block removed) / a bare `transformers` `generate` of the same length from
  the same prompt on a separately loaded plain copy of the model;
- tasks: lm-eval in-process with the removals applied / lm-eval on its own on the
  checkpoint (analysis/tasks/bench.py).
Every line ends `ratio X (target <= Y)`. Timing never decides a test; this prints figures
for the closing notes and README.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from analysis.cli.args import add_model_args, load_model, positive_int
from analysis.cli.scale import bench_dtypes, bench_scale
from analysis.cli.workloads import bare_forward, instrumented
from analysis.measure.collect import batch_tokens_for, batches
from analysis.data.corpus import load_file
from analysis.data.evaluation import windows_for
from analysis.ablate.sweep import exact_sweep


def timed(fn, repeats: int = 1) -> float:
    """Median wall time of fn over `repeats` runs (after nothing: callers warm up)."""
    return paired([fn], repeats)[0]


def paired(fns: list, repeats: int) -> list[float]:
    """Median wall time of each fn, run in turn (a, b, a, b, ...) so that a change in
    machine load during the benchmark hits every side alike."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


PARTS = ("pass", "sweep", "toggle", "memory", "generate")
EXTRA_PARTS = ("scale", "dtype", "curves", "tasks")  # only when asked for: minutes each


def add_command(sub) -> None:
    bench = sub.add_parser("bench", help="print speed ratios against baselines measured in the same run")
    add_model_args(bench)
    bench.add_argument("--corpus", default="builtin:all")
    bench.add_argument("--seq-len", type=positive_int, default=128)
    bench.add_argument("--max-windows", type=positive_int, default=None)
    bench.add_argument("--repeats", type=positive_int, default=3)
    bench.add_argument("--parts", default=",".join(PARTS),
                       help=f"comma-separated subset of {', '.join(PARTS + EXTRA_PARTS)} (default: "
                            f"{', '.join(PARTS)}; scale: the 135M / 0.5B / 1.2B ladder, dtype: resident memory "
                            "of the model loaded in each dtype)")
    bench.set_defaults(handler=run_bench)


def run_bench(args) -> int:
    parts = {p.strip() for p in args.parts.split(",")}
    if unknown := parts - set(PARTS + EXTRA_PARTS):
        print(f"error: unknown bench part(s) {', '.join(sorted(unknown))}; choose from "
              f"{', '.join(PARTS + EXTRA_PARTS)}", file=sys.stderr)
        return 2
    if "scale" in parts:
        bench_scale(args)
    if "dtype" in parts:
        bench_dtypes(args)
    if not parts - {"scale", "dtype"}:  # scale and dtype run in fresh processes of their own
        return 0
    model = load_model(args)
    torch.manual_seed(0)
    corpus = load_file(args.corpus)
    max_windows = args.max_windows or 8
    windows = windows_for(model, corpus, args.seq_len, max_windows)
    print(f"model {model.name} ({model.n_layers} layers) on {model.device}, {torch.get_num_threads()} threads; "
          f"{windows.shape[0]} windows x {windows.shape[1]} tokens")
    if "pass" in parts:
        if model.source_dir is None:
            print("bare-forward baseline needs a local model directory; skipped")
            return 1
        bench_pass(model, windows, args.repeats)
    if "sweep" in parts:
        fast, naive = paired([lambda: exact_sweep(model, windows), lambda: exact_sweep(model, windows, naive=True)], 1)
        print(f"removal sweep, prefix re-use     {fast:8.2f} s")
        print(f"removal sweep, naive             {naive:8.2f} s   ratio {fast / naive:.2f}  (target <= 0.6)")
    if "toggle" in parts:
        from analysis.playground.bench import bench_exact, bench_toggles
        toggle, full = bench_toggles(model, windows)
        print(f"single toggle (median, all {3 * model.n_layers}) {toggle:8.2f} s")
        print(f"full forward over the corpus     {full:8.2f} s   ratio {toggle / full:.2f}  (target <= 0.6)")
        shown = windows_for(model, corpus, args.seq_len, args.max_windows, "calibration")
        got = bench_exact(model, shown)
        print(f"playground at the app's default windows ({shown.shape[0]} x {shown.shape[1]}), "
              f"the browser test's {got['toggles']} clicks, medians:")
        print(f"toggle to first estimate         {got['first']:8.2f} s   ({got['sample']} windows)")
        print(f"estimate 1 s after the toggle     {got['windows_at_1s']:5.0f} windows (median)")
        print(f"  its 95% interval, off the exact   {100 * got['width']:5.1f} %   (widest {100 * got['widest']:.1f} %, "
              f"held the exact number {got['covered']} of {got['toggles']}; target: within 10 %)")
        print(f"toggle to exact number           {got['exact']:8.2f} s")
        print(f"its floor (suffix + readout)     {got['floor']:8.2f} s")
        print(f"exact toggle / its floor         {got['exact'] / got['floor']:8.2f}     "
              f"ratio {got['exact'] / got['floor']:.2f}  (target <= 1.5)")
    if "memory" in parts:
        bench_memory(args)
    if "curves" in parts:
        bench_curves(model, windows, args.repeats)
    if "tasks" in parts:
        from analysis.tasks.bench import bench_tasks, print_bench
        print_bench(bench_tasks(model, paired, args.repeats))
    if "generate" in parts:
        if model.source_dir is None:
            print("bare-generate baseline needs a local model directory; skipped")
            return 1
        bench_generate(model, args.repeats)
    return 0


GENERATE_PROMPT = "The history of the printing press begins"
GENERATE_TOKENS = 60


def bench_generate(model, repeats: int) -> None:
    """Seconds per generated token: `stream_prompt` (the playground's token-by-token
    stream, full and with the middle block removed) against a bare `generate` (greedy, KV
    cache) on a separately loaded plain copy, same prompt; the three run in turn `repeats` times."""
    from transformers import AutoModelForCausalLM

    from analysis.model.removal import Removal
    from analysis.playground.prompts import prompt_tokens, stream_prompt

    hf = AutoModelForCausalLM.from_pretrained(model.source_dir, dtype=model.hf_model.dtype).to(model.device).eval()
    tokens = prompt_tokens(model, GENERATE_PROMPT, GENERATE_TOKENS)
    counts = {}

    def bare() -> None:
        with torch.inference_mode():
            out = hf.generate(tokens.to(model.device), attention_mask=torch.ones_like(tokens).to(model.device),
                              max_new_tokens=GENERATE_TOKENS, min_new_tokens=GENERATE_TOKENS, do_sample=False,
                              pad_token_id=model.tokenizer.eos_token_id)
        counts["bare"] = out.shape[1] - tokens.shape[1]

    def streamed(name: str, removal: Removal):
        def run() -> None:
            stream = stream_prompt(model, tokens, removal, GENERATE_TOKENS)
            next(stream)  # the top-k list
            counts[name] = sum(1 for _ in stream)
        return run

    runs = [bare, streamed("full", Removal()), streamed("pruned", Removal.of(blocks=[model.n_layers // 2]))]
    for run in runs:
        run()  # warm-up
    bare_s, full_s, pruned_s = (s / max(1, counts[n]) for s, n in
                                zip(paired(runs, repeats), ("bare", "full", "pruned")))
    print(f"bare generate ({counts['bare']} tokens)          {1000 * bare_s:8.1f} ms/token")
    print(f"streamed, full model ({counts['full']} tokens)   {1000 * full_s:8.1f} ms/token   "
          f"ratio {full_s / bare_s:.2f}  (target <= 1.25)")
    print(f"streamed, block {model.n_layers // 2} removed ({counts['pruned']} tokens) {1000 * pruned_s:8.1f} ms/token   "
          f"ratio {pruned_s / bare_s:.2f}  (target <= 1.25)")


def bench_curves(model, windows, repeats: int) -> None:
    """Greedy to k = L/2 against (naive candidate count) x (one full forward + loss over
    the same windows, the median of forwards timed before and after the greedy run), and
    the knapsack on random values."""
    import numpy as np

    from analysis.model.removal import Removal
    from analysis.ablate.replay import naive_logits
    from analysis.search.dynamic_depth import min_total_weight
    from analysis.search.greedy import iterative_greedy
    from analysis.measure.collect import token_nll

    L = model.n_layers

    def full_forward() -> None:
        for _, chunk in batches(windows, batch_tokens_for(model)):
            with model.lock:
                token_nll(naive_logits(model, chunk, Removal.of(blocks=[L // 2])), chunk)

    full_forward()  # warm-up
    before = [timed(full_forward) for _ in range(repeats)]
    start = time.perf_counter()
    result = iterative_greedy(model, windows, "blocks", L // 2)
    greedy = time.perf_counter() - start
    after = [timed(full_forward) for _ in range(repeats)]
    full = statistics.median(before + after)
    naive = sum(L - s for s in range(L // 2))
    print(f"full forward + loss (naive_logits)  {full:8.2f} s   (median of {2 * repeats}, before and after)")
    print(f"iterative greedy to k = {L // 2}          {greedy:8.2f} s   {result.batches_measured} of "
          f"{result.batches_naive} candidate-batches measured, {result.batches_bounded} of them dropped by the "
          f"vocabulary bound; {result.suffix_blocks} suffix blocks run (restarting each candidate at its own layer: "
          f"{result.suffix_blocks_restart})")
    print(f"greedy / {naive} naive full forwards   ratio {greedy / (naive * full):.2f}  (target <= 0.35)")
    rng = np.random.default_rng(0)
    weights, values = rng.integers(1, L + 1, 100), rng.random((100, 100)) * 3
    budget = float(values[:, np.argmax(weights)].sum())
    knap = statistics.median(timed(lambda: min_total_weight(weights, values, budget)) for _ in range(max(3, repeats)))
    print(f"knapsack 100 windows x 100 configs  {knap:8.3f} s / 1 s   ratio {knap:.3f}  (target <= 0.2)")


def bench_pass(model, windows, repeats: int) -> None:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model.source_dir, dtype=model.hf_model.dtype).to(model.device).eval()
    tokens = batch_tokens_for(model)  # the same batches on both sides
    bare_forward(hf, windows, tokens)  # warm-up
    instrumented(model, windows, False)
    bare, inst = paired([lambda: bare_forward(hf, windows, tokens), lambda: instrumented(model, windows, False)],
                        max(5, repeats))  # a ~1 s pair: the median of 5 steadies a ratio that drifts by +-0.03 over 3
    bare2, lens = paired([lambda: bare_forward(hf, windows, tokens), lambda: instrumented(model, windows, True)], 1)
    floor = lens_floor(model, windows)
    print(f"bare transformers forward        {bare:8.2f} s")
    print(f"instrumented pass (no lens)      {inst:8.2f} s   ratio {inst / bare:.2f}  (target <= 1.25)")
    print(f"logit-lens FLOP floor            {floor:8.2f} x a bare forward (+ {model.n_layers} unembeddings of "
          f"2 x {model.d_model} x {model.bridge.cfg.d_vocab} FLOPs per predicted token)")
    print(f"instrumented pass + logit lens   {lens:8.2f} s   {lens / bare2:.2f} x bare; "
          f"ratio to its FLOP floor {lens / bare2 / floor:.2f}  (target <= 1.5)")


def lens_floor(model, windows) -> float:
    """FLOPs of a forward plus the lens' L unembeddings per predicted token, over the
    forward's FLOPs: the time a perfect lens would take, in bare forwards."""
    from analysis.ablate.costs import component_costs
    W, T = windows.shape
    forward = component_costs(model, context=(T + 1) // 2).total_flops * W * T
    lens = model.n_layers * 2.0 * model.d_model * model.bridge.cfg.d_vocab * W * (T - 1)
    return (forward + lens) / forward


PEAK = ("import resource, sys\nfrom analysis.cli import main\nrc = main(sys.argv[1:])\n"
        "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(rc)")


def peak_rss(argv: list[str]) -> int:
    """Peak resident bytes of `python -m analysis <argv>` in a fresh process whose result
    cache is empty (the converted model is shared)."""
    from analysis.core.settings import models_dir
    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as cache:
        os.symlink(models_dir(), Path(cache) / "models")
        env = dict(os.environ, LAYERLAB_CACHE_DIR=cache)
        proc = subprocess.run([sys.executable, "-c", PEAK, *argv], cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"report failed: {proc.stderr.strip().splitlines()[-1:]}")
    return int(proc.stderr.rsplit("PEAK_KB", 1)[1].split()[0]) * 1024


def bench_memory(args) -> None:
    """Peak RSS of the full report (logit lens included, removal sweep left out: it holds
    one batch too) at 32 and 62 windows of 64 tokens: one batch plus a window, two batches."""
    peaks = {}
    for n in (32, 62):
        with tempfile.TemporaryDirectory() as out:
            peaks[n] = peak_rss(["report", "--model", args.model, "--corpus", args.corpus, "--seq-len", "64",
                                 "--max-windows", str(n), "--dtype", args.dtype, "--skip-removal",
                                 "--out", str(Path(out) / "report.json")])
        print(f"report peak RSS, {n} windows x 64   {peaks[n] / 2 ** 30:6.2f} GiB")
    print(f"peak RSS 62 windows / 32 windows   ratio {peaks[62] / peaks[32]:.2f}  (target <= 1.10)")
