"""`python -m analysis bench --parts scale`: the size ladder.

Random-weight Llama configs of about 135M, 0.5B and 1.2B parameters (the default
model's vocabulary of 49,152 tokens) are written to a temporary directory, then each is
measured in fresh processes, one after another, so that peaks never mix:
- a bare `transformers` forward over the windows (time per token, peak RSS);
- the instrumented pass (similarity, sublayers, sparsity, perplexity; no logit lens)
  through the same local-directory loading path as the app (time per token, peak RSS,
  tokens per batch from the memory budget, settings.batch_tokens).
Each size prints time per token and peak RSS against the bare forward and against the
weight bytes, and the target peak RSS <= weights + one batch's activations + 1 GiB.
Timing never decides a test.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from analysis.cli.workloads import bare_forward, instrumented

GIB = 2 ** 30
LADDER = {  # Llama shapes; vocabulary 49,152, tied embeddings
    "135M": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                 num_key_value_heads=3),
    "0.5B": dict(hidden_size=1024, intermediate_size=5120, num_hidden_layers=24, num_attention_heads=16,
                 num_key_value_heads=4),
    "1.2B": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=18, num_attention_heads=32,
                 num_key_value_heads=8),
}
CHILD = "import sys\nfrom analysis.cli.scale import child\nchild(sys.argv[1:])"


def build(size: str, directory: str, dtype: str) -> None:
    """A random-weight Llama of `size` with the default model's tokenizer, saved to `directory`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from analysis.model.loading import DTYPES
    from analysis.model.sources import resolve_source
    tokenizer = AutoTokenizer.from_pretrained(resolve_source("default")[0])
    config = LlamaConfig(vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **LADDER[size])
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(DTYPES[dtype]).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def _windows(tokenizer, n_ctx: int, seq_len: int, max_windows: int):
    from analysis.data.corpus import load_file, make_windows
    return make_windows(tokenizer, load_file("builtin:all").text, seq_len, n_ctx, max_windows)


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    spent = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        spent.append(time.perf_counter() - start)
    return sorted(spent)[len(spent) // 2]


def resident(spec: str, dtype: str) -> dict:
    """Run in a fresh process: resident memory the model adds when loaded in `dtype`
    (RSS after loading minus RSS after importing everything loading uses) and its
    weight bytes."""
    import gc

    import psutil
    import transformers  # noqa: F401  (imported before the baseline: code, not the model)
    from transformer_lens.model_bridge import TransformerBridge  # noqa: F401

    from analysis.model.loading import get_model
    process = psutil.Process()
    before = process.memory_info().rss
    model = get_model(spec, "cpu", dtype)
    gc.collect()
    return {"added_rss": process.memory_info().rss - before,
            "weight_bytes": sum(p.numel() * p.element_size() for p in model.hf_model.parameters())}


def bench_dtypes(args) -> list[dict]:
    """Resident memory of `--model` loaded in each dtype, one fresh process per dtype."""
    from analysis.model.loading import DTYPES
    rows = [{"dtype": dtype} | run_child(["load", args.model, dtype]) for dtype in DTYPES]
    base = rows[0]
    print(f"{'dtype':>9} {'weights':>10} {'RSS added by loading':>21} {'vs float32':>10}")
    for r in rows:
        print(f"{r['dtype']:>9} {r['weight_bytes'] / 2 ** 20:7.0f}MiB {r['added_rss'] / 2 ** 20:18.0f}MiB "
              f"{r['added_rss'] / base['added_rss']:10.2f}")
    return rows


def measure(role: str, directory: str, dtype: str, seq_len: int, max_windows: int, repeats: int) -> dict:
    """Run in a fresh process: time per token of the bare forward or the instrumented
    pass, and the process's peak RSS."""
    import resource

    import torch

    from analysis.measure.collect import activation_bytes_per_token, batch_tokens_for
    from analysis.model.loading import DTYPES, get_model
    out = {}
    if role == "bare":
        from transformers import AutoModelForCausalLM, AutoTokenizer
        hf = AutoModelForCausalLM.from_pretrained(directory, dtype=DTYPES[dtype]).eval()
        windows = _windows(AutoTokenizer.from_pretrained(directory), hf.config.max_position_embeddings, seq_len,
                           max_windows)
        from analysis.core import settings
        tokens = settings.batch_tokens(4 * hf.config.vocab_size)
        seconds = _timed(lambda: bare_forward(hf, windows, tokens), repeats)
    else:
        model = get_model(directory, "cpu", dtype)
        windows = _windows(model.tokenizer, model.n_ctx, seq_len, max_windows)
        seconds = _timed(lambda: instrumented(model, windows, False), repeats)
        hf = model.hf_model
        out |= {"batch_tokens": batch_tokens_for(model), "bytes_per_token": activation_bytes_per_token(model)}
    out |= {"seconds_per_token": seconds / windows.numel(), "tokens": int(windows.numel()),
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "params": sum(p.numel() for p in hf.parameters()),
            "weight_bytes": sum(p.numel() * p.element_size() for p in hf.parameters()),
            "threads": torch.get_num_threads()}
    return out


def child(argv: list[str]) -> None:
    """Entry of a measuring process: `build SIZE DIR DTYPE`, `load MODEL DTYPE` or
    `bare|pass DIR DTYPE SEQ WINDOWS REPEATS`."""
    if argv[0] == "build":
        build(argv[1], argv[2], argv[3])
        return
    if argv[0] == "load":
        print("RESULT " + json.dumps(resident(argv[1], argv[2])))
        return
    role, directory, dtype, seq_len, max_windows, repeats = argv
    print("RESULT " + json.dumps(measure(role, directory, dtype, int(seq_len), int(max_windows), int(repeats))))


def run_child(argv: list[str]) -> dict:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", CHILD, *argv], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT "):]) if lines else {}


def row(size: str, bare: dict, inst: dict) -> dict:
    """One line of the ladder: every figure the README table shows."""
    weights = inst["weight_bytes"]
    activations = inst["batch_tokens"] * inst["bytes_per_token"]
    target = weights + activations + GIB
    return {"size": size, "params": inst["params"], "weights_gib": weights / GIB,
            "batch_tokens": inst["batch_tokens"], "batch_gib": activations / GIB,
            "bare_ms_per_token": 1e3 * bare["seconds_per_token"], "pass_ms_per_token": 1e3 * inst["seconds_per_token"],
            "pass_over_bare": inst["seconds_per_token"] / bare["seconds_per_token"],
            "pass_ms_per_token_per_weight_gib": 1e3 * inst["seconds_per_token"] / (weights / GIB),
            "bare_peak_gib": bare["peak_rss"] / GIB, "pass_peak_gib": inst["peak_rss"] / GIB,
            "pass_peak_over_bare": inst["peak_rss"] / bare["peak_rss"], "pass_peak_over_weights": inst["peak_rss"] / weights,
            "target_gib": target / GIB, "within_target": inst["peak_rss"] <= target}


def bench_scale(args, sizes=tuple(LADDER)) -> list[dict]:
    """Build, measure and print every size of the ladder (--dtype, --seq-len, --max-windows, --repeats)."""
    windows = args.max_windows or 4
    repeats = max(1, min(args.repeats, 3))
    print(f"size ladder: random-weight Llama, {args.dtype}, {windows} windows x {args.seq_len + 1} tokens, "
          f"median of {repeats} after a warm-up, each side in its own process")
    print(f"{'size':>5} {'params':>7} {'weights':>8} {'batch':>11} {'bare ms/tok':>11} {'pass ms/tok':>11} "
          f"{'ratio':>5} {'ms/tok/GiB':>10} {'bare peak':>9} {'pass peak':>9} {'ratio':>5} {'/weights':>8} "
          f"{'target':>7}")
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix=f"layerlab-{size}-") as directory:
            run_child(["build", size, directory, args.dtype])
            common = [directory, args.dtype, str(args.seq_len), str(windows), str(repeats)]
            bare, inst = run_child(["bare", *common]), run_child(["pass", *common])
        r = row(size, bare, inst)
        rows.append(r)
        print(f"{size:>5} {r['params'] / 1e9:6.2f}B {r['weights_gib']:6.2f}Gi {r['batch_tokens']:>5} "
              f"{r['batch_gib']:4.2f}Gi {r['bare_ms_per_token']:11.2f} {r['pass_ms_per_token']:11.2f} "
              f"{r['pass_over_bare']:5.2f} {r['pass_ms_per_token_per_weight_gib']:10.2f} "
              f"{r['bare_peak_gib']:7.2f}Gi {r['pass_peak_gib']:7.2f}Gi {r['pass_peak_over_bare']:5.2f} "
              f"{r['pass_peak_over_weights']:8.2f} {r['target_gib']:5.2f}Gi {'ok' if r['within_target'] else 'OVER'}")
    return rows
