"""Logit lens over the residual stream, reduced one chunk of tokens at a time.

logits_l = unembed(final_norm(resid_post_l)): the final norm is applied afresh to each
layer's own residual (not TransformerLens' accumulated_resid, which reuses the last
layer's scale). For every predicted position and block l we derive cross-entropy to the
gold token, KL(final || layer), entropy, top-1 agreement with the final top-1 and the
rank of the final top-1, plus the confidence signals the early-exit rules read. A
[layers x tokens x vocab] tensor never exists: only [chunk x vocab] for one layer.
`window_grid` reads one window out at resid_post (or resid_mid) of every block for the
per-window view.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from analysis.measure import early_exit
from analysis.model import hooks
from analysis.measure.fused import fused
from analysis.model.hooks import readout
from analysis.core.store import Record

@dataclass(frozen=True)
class LensResult(Record):
    """Logit lens per block l (readout after block l, [L] each) over `n_positions`
    predicted tokens; `seq_mean_ce` [windows, L] is each window's mean cross-entropy of
    the readout after every block; `early_exit` the oracle and the rules' curves."""

    ce: np.ndarray
    kl_to_final: np.ndarray
    entropy: np.ndarray
    top1_agree: np.ndarray
    median_rank_final_top1: np.ndarray
    seq_mean_ce: np.ndarray
    early_exit: early_exit.ExitResult
    n_positions: int

    ARRAYS = ("ce", "kl_to_final", "entropy", "top1_agree", "median_rank_final_top1", "seq_mean_ce")
    NESTED = {"early_exit": early_exit.ExitResult}


SIGNALS = ("ce", "kl", "entropy", "agree", "rank", "maxprob", "gap", "cos_next")


class Scratch:
    """Two reusable [rows, V] float32 buffers for the lens' vocabulary-wide work:
    allocating ~50 MB per layer would page-fault on every call."""

    def __init__(self) -> None:
        self._buffers: list = []

    def get(self, rows: int, vocab: int, device) -> list[torch.Tensor]:
        if not self._buffers or self._buffers[0].shape[0] < rows or self._buffers[0].shape[1] != vocab \
                or self._buffers[0].device != torch.device(device):
            self._buffers = [torch.empty(rows, vocab, device=device) for _ in range(2)]
        return [b[:rows] for b in self._buffers]


def _readout_examples() -> list:
    logits, index = torch.randn(5, 11), torch.arange(5)
    probs = logits.softmax(-1)
    return [(logits, index, index, probs, probs.sum(-1))]


@fused(examples=_readout_examples)
def readout_signals(logits, top1_f, gold, p_f, neg_h_f):
    """The signals of one layer's readout logits [n, V] (float32): cross-entropy to `gold`
    [n], KL(final || layer) from the final distribution p_f [n, V] and its sum p log p
    `neg_h_f` [n], entropy, agreement with the final top-1 `top1_f` [n] (the final top-1
    is also this readout's largest logit), the final top-1's rank (count of larger
    logits), max probability and the top-2 probability gap. With z = logits - max and
    e = exp(z): lse = log sum e, entropy = lse - sum(e z) / sum(e), KL = sum p_f log p_f -
    sum p_f z + lse. Compiled (analysis.measure.fused) this is two reads of the logits: the max,
    then every sum at once; no log-softmax or probability tensor is built."""
    m = logits.amax(-1, keepdim=True)
    target = logits.gather(-1, top1_f[:, None])
    z = logits - m
    e = z.exp()
    s = e.sum(-1)
    lse = s.log()
    ties = (logits == m).sum(-1)  # the largest logit twice: the top-2 gap is 0, as topk gives
    second = torch.where(ties > 1, m.squeeze(-1), torch.where(logits < m, logits, float("-inf")).amax(-1))
    return {
        "ce": lse - z.gather(-1, gold[:, None]).squeeze(-1),
        "kl": neg_h_f - (p_f * z).sum(-1) + lse,
        "entropy": lse - (e * z).sum(-1) / s,
        "agree": (target.squeeze(-1) >= m.squeeze(-1)).float(),
        "rank": (logits > target).sum(-1).float(),
        "maxprob": 1.0 / s,
        "gap": (1.0 - torch.exp(second - m.squeeze(-1))) / s,
    }


def layer_signals(model, resid_post: list, final_logits: torch.Tensor, gold: torch.Tensor,
                  resid_pre0: torch.Tensor, scratch: Scratch | None = None) -> dict:
    """Per-token signals [n, L] for rows of flattened positions.

    resid_post: L tensors [n, d] (output of each block); final_logits [n, V]; gold [n];
    resid_pre0 [n, d] (h_0, for the cosine between consecutive residuals).

    One unembedding per layer into a reused buffer, then `readout_signals` on its [n, V]
    logits (float32, never float64).
    """
    n, vocab = final_logits.shape
    z, p_f = (scratch or Scratch()).get(n, vocab, final_logits.device)
    z.copy_(final_logits)
    z.sub_(z.amax(-1, keepdim=True))
    top1_f = z.argmax(-1)
    torch.exp(z, out=p_f)
    lse_f = p_f.sum(-1, keepdim=True)
    p_f.div_(lse_f)
    neg_h_f = (p_f * z).sum(-1) - lse_f.squeeze(-1).log()  # sum p_f log p_f
    out = {k: [] for k in SIGNALS}
    previous = resid_pre0
    for h in resid_post:
        logits = readout(model, h, out=z).float()
        for k, v in readout_signals(logits, top1_f, gold, p_f, neg_h_f).items():
            out[k].append(v)
        out["cos_next"].append(F.cosine_similarity(previous.float(), h.float(), dim=-1))
        previous = h
    return {k: torch.stack(v, dim=1) for k, v in out.items()}


class LensReducer:
    sites = ()

    def __init__(self, n_layers: int, vocab: int, n_windows: int, chunk_tokens: int = 128) -> None:
        self.L = n_layers
        self.chunk = chunk_tokens
        self.sums = {k: torch.zeros(n_layers, dtype=torch.float64) for k in ("ce", "kl", "entropy", "agree")}
        self.rank_hist = torch.zeros(n_layers, vocab + 1, dtype=torch.float64)
        self.seq_ce = torch.zeros(n_windows, n_layers, dtype=torch.float64)
        self.seq_count = torch.zeros(n_windows, dtype=torch.float64)
        self.exits = early_exit.ExitAccumulator(n_layers)
        self.count = 0
        self.scratch = Scratch()

    def hooks(self, model, first_repr):
        return []

    def update(self, model, batch) -> None:
        B, T = batch.tokens.shape
        # Rows of [B*T] that predict a token inside their window (all but each window's last);
        # views, not copies: only one chunk of rows is ever gathered at a time.
        positions = torch.arange(B * T, device=batch.tokens.device)
        rows_idx = positions[positions % T != T - 1]
        flat_tokens = batch.tokens.reshape(B * T)
        gold_all = flat_tokens[rows_idx + 1]
        window = rows_idx // T + batch.window_offset
        resid = [h.reshape(B * T, -1) for h in batch.resid]
        logits = batch.logits.reshape(B * T, -1)
        for s in range(0, rows_idx.shape[0], self.chunk):
            idx = rows_idx[s:s + self.chunk]
            sig = layer_signals(model, [h[idx] for h in resid[1:]], logits[idx], gold_all[s:s + self.chunk],
                                resid[0][idx], self.scratch)
            for k in self.sums:
                self.sums[k] += sig[k].double().sum(0).cpu()
            ranks = sig["rank"].long().clamp_max(self.rank_hist.shape[1] - 1).cpu()
            self.rank_hist.scatter_add_(1, ranks.T, torch.ones_like(ranks.T, dtype=torch.float64))
            win = window[s:s + self.chunk].cpu()
            self.seq_ce.index_add_(0, win, sig["ce"].double().cpu())
            self.seq_count.index_add_(0, win, torch.ones(win.shape[0], dtype=torch.float64))
            self.exits.update({k: v.cpu() for k, v in sig.items()})
            self.count += sig["ce"].shape[0]

    def result(self) -> LensResult:
        n = max(1, self.count)
        cdf = self.rank_hist.cumsum(1)
        median_rank = (cdf < cdf[:, -1:] / 2).sum(1).double()
        return LensResult(
            ce=(self.sums["ce"] / n).numpy(),
            kl_to_final=(self.sums["kl"] / n).numpy(),
            entropy=(self.sums["entropy"] / n).numpy(),
            top1_agree=(self.sums["agree"] / n).numpy(),
            median_rank_final_top1=median_rank.numpy(),
            seq_mean_ce=(self.seq_ce / self.seq_count.clamp_min(1)[:, None]).numpy(),
            early_exit=self.exits.result(),
            n_positions=self.count,
        )


SITES = ("resid_post", "resid_mid")


def decode_tokens(tokenizer, ids) -> np.ndarray:
    """Each token id decoded on its own to its text (array of str, same shape as `ids`)."""
    ids = np.asarray(ids)
    flat = ids.reshape(-1).tolist()
    cache = {i: tokenizer.decode([i]) for i in set(flat)}
    return np.array([cache[i] for i in flat], dtype=object).reshape(ids.shape)


def first_agreement_above(top1_agree, level: float = 0.5) -> int | None:
    """First block whose logit-lens top-1 agrees with the final top-1 on more than `level` of tokens."""
    above = np.flatnonzero(np.asarray(top1_agree) > level)
    return int(above[0]) if above.size else None


def window_grid(model, window: torch.Tensor, top_k: int = 5, site: str = "resid_post") -> dict:
    """Logit lens for one window [T] (one short forward): per position and block l, the
    top-k tokens and probabilities read out at `site` of block l (resid_post = after the
    block, resid_mid = between its attention and MLP), the probability of the final
    top-1, KL(final || layer) and entropy. Arrays are [T, L] ([T, L, k] for the top-k),
    plus `final_top1` [T]."""
    if site not in SITES:
        raise ValueError(f"site must be one of {SITES}")
    if site == "resid_mid" and model.parallel_attn_mlp:
        raise ValueError("This architecture runs attention and MLP in parallel: there is no resid_mid.")
    names = [getattr(hooks, site)(l) for l in range(model.n_layers)]
    tokens = window.view(1, -1).to(model.device)
    with model.lock, torch.inference_mode(), hooks.capture(model, names) as got:
        final = model.bridge(tokens, return_type="logits")[0].float()
        logp_f = F.log_softmax(final, -1)
        top1_f = final.argmax(-1)
        rows = {"top_ids": [], "top_probs": [], "p_final_top1": [], "kl": [], "entropy": []}
        for name in names:
            logp = F.log_softmax(readout(model, got[name][0]).float(), -1)
            top = logp.topk(top_k, dim=-1)
            rows["top_ids"].append(top.indices.cpu())
            rows["top_probs"].append(top.values.exp().cpu())
            rows["p_final_top1"].append(logp.gather(-1, top1_f[:, None]).squeeze(-1).exp().cpu())
            rows["kl"].append(hooks.kl(logp_f, logp).cpu())
            rows["entropy"].append(hooks.entropy(logp).cpu())
    grid = {k: torch.stack(v, dim=1).numpy() for k, v in rows.items()}
    grid["final_top1"] = top1_f.cpu().numpy()
    return grid
