"""`python -m analysis bench`: speed ratios against baselines measured in the same run.

- exact removal sweep with prefix re-use / naive sweep (one full forward per removal);
- instrumented pass / a bare `transformers` forward over the same windows (a separate,
  unwrapped copy of the model), without and with the logit lens;
- median single-toggle update in the playground / one full forward over the same corpus.
Timing never decides a test; this prints figures for the closing notes and README.
"""
from __future__ import annotations

import statistics
import time

import torch

from analysis.cli.args import add_model_args, load_model, positive_int
from analysis.collect import Perplexity, batches, run_pass
from analysis.corpus import load_file, make_windows
from analysis.lens import LensReducer
from analysis.pruning.removal import exact_sweep
from analysis.similarity import SimilarityReducer
from analysis.sparsity import SparsityReducer
from analysis.sublayers import SublayerReducer


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


def bare_forward(hf, windows, batch_tokens: int = 2048) -> None:
    with torch.inference_mode():
        for _, chunk in batches(windows, batch_tokens):
            hf(chunk).logits


def instrumented(model, windows, with_lens: bool) -> None:
    L = model.n_layers
    n_repr = windows.shape[0] * (windows.shape[1] - 1)
    reducers = [Perplexity(), SimilarityReducer(L, model.d_model, n_repr, windows.shape[0]),
                SublayerReducer(L, model.parallel_attn_mlp), SparsityReducer(L, model.d_mlp)]
    if with_lens:
        reducers.append(LensReducer(L, model.bridge.cfg.d_vocab, windows.shape[0]))
    run_pass(model, windows, reducers)


def add_command(sub) -> None:
    bench = sub.add_parser("bench", help="print speed ratios against baselines measured in the same run")
    add_model_args(bench)
    bench.add_argument("--corpus", default="builtin:all")
    bench.add_argument("--seq-len", type=positive_int, default=128)
    bench.add_argument("--max-windows", type=positive_int, default=None)
    bench.add_argument("--repeats", type=positive_int, default=3)
    bench.add_argument("--parts", default="pass,sweep,toggle",
                       help="comma-separated subset of pass, sweep, toggle (default: all three)")
    bench.set_defaults(handler=lambda args: run_bench(args, load_model(args)))


def run_bench(args, model) -> int:
    torch.manual_seed(0)
    corpus = load_file(args.corpus)
    max_windows = args.max_windows or 8
    windows = make_windows(model.tokenizer, corpus.text, args.seq_len, model.n_ctx, max_windows)
    print(f"model {model.name} ({model.n_layers} layers) on {model.device}, {torch.get_num_threads()} threads; "
          f"{windows.shape[0]} windows x {windows.shape[1]} tokens")
    parts = {p.strip() for p in args.parts.split(",")}
    if unknown := parts - {"pass", "sweep", "toggle"}:
        print(f"error: unknown bench part(s) {', '.join(sorted(unknown))}; choose from pass, sweep, toggle")
        return 2
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
        from analysis.pruning.playground import bench_toggles
        toggle, full = bench_toggles(model, windows)
        print(f"single toggle (median, all {3 * model.n_layers}) {toggle:8.2f} s")
        print(f"full forward over the corpus     {full:8.2f} s   ratio {toggle / full:.2f}  (target <= 0.6)")
    return 0


def bench_pass(model, windows, repeats: int) -> None:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model.source_dir, dtype=model.hf_model.dtype).to(model.device).eval()
    bare_forward(hf, windows)  # warm-up
    instrumented(model, windows, False)
    bare, inst = paired([lambda: bare_forward(hf, windows), lambda: instrumented(model, windows, False)],
                        repeats)
    lens = timed(lambda: instrumented(model, windows, True), 1)
    print(f"bare transformers forward        {bare:8.2f} s")
    print(f"instrumented pass (no lens)      {inst:8.2f} s   ratio {inst / bare:.2f}  (target <= 1.3)")
    print(f"instrumented pass + logit lens   {lens:8.2f} s   ratio {lens / bare:.2f}  (lens reads out all {model.n_layers} layers)")
