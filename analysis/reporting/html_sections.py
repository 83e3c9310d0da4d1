"""Parts of the HTML report that are not figures of the five pages: each number's
definition in one line (DESIGN.md section 3), HTML tables, the plan of a pruned
checkpoint, and figures for a `curves` section of report.json whatever its nesting."""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

DEFINITIONS = (
    ("perplexity", "exp(mean next-token cross-entropy over every predicted token of every window)"),
    ("h_l", "the residual stream entering block l (l = 0..L-1); h_L is the last block's output before the final norm"),
    ("cosine matrix", "C[i][j] = mean over non-BOS positions of cos(h_i, h_j)"),
    ("angular distance", "mean of arccos(cos(h_i, h_j)) / pi over the positions (last token of each window for blocks)"),
    ("linear CKA", "||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), column-centred, on an even sample of up to 1,024 positions"),
    ("Block Influence", "BI_l = 1 - mean cos(h_l, h_l+1) (ShortGPT); low = the block changes the stream little"),
    ("best block of n", "the start l minimising the angular distance between h_l and h_l+n at the last token "
                        "(Gromov et al.); removes blocks l..l+n-1"),
    ("attention score", "1 - mean cos(resid_pre, resid_mid) (parallel blocks: 1 - mean cos(pre, pre + attn_out))"),
    ("MLP score", "1 - mean cos(resid_mid, resid_post) (parallel blocks: 1 - mean cos(pre, pre + mlp_out))"),
    ("norm ratio", "mean ||sublayer output|| / ||the stream it reads||"),
    ("removal perplexity", "exact corpus perplexity with one block (output = input) or sublayer (output = 0) removed"),
    ("first-order estimate", "perplexity from delta NLL ~ -grad . output of the removed parts (one forward + backward)"),
    ("Spearman rho", "rank correlation between a score and the measured removal perplexity (+1 = same order)"),
    ("share near zero", "fraction of MLP activations a (input of the down projection) with |a| <= eps"),
    ("relative rule", "fraction with |a| <= p * max|a| of the same token"),
    ("dead neuron", "an MLP neuron with |a| <= eps at every non-BOS position"),
    ("firing frequency", "share of positions where a neuron has |a| > eps"),
    ("logit lens", "unembed(final_norm(h after block l)), the final norm applied afresh to each block's residual"),
    ("lens cross-entropy", "mean -log p(gold next token) of the readout after block l"),
    ("KL to final", "mean KL(final output || readout after block l)"),
    ("top-1 agreement", "share of tokens whose readout top-1 equals the model's final top-1"),
    ("median rank", "median rank of the final top-1 token in the readout (0 = top)"),
    ("oracle exit", "first block whose readout top-1 equals the final top-1; mean of (exit block + 1) / L"),
    ("exit rule", "exit at the first block where the confidence signal passes the threshold (teacher-forced, "
                  "optimistic)"),
    ("operating point", "the cheapest threshold of a rule whose agreement with the full model reaches the target"),
    ("per-sequence oracle", "per window, the fewest blocks whose readout perplexity is within x% of the full model's"),
)


def _cell(value) -> str:
    if isinstance(value, float):
        value = f"{value:.6g}"
    return html.escape(str(value))


def table(rows: list[dict], scroll: bool = False) -> str:
    """An HTML table of dict rows (the keys of the first row are the columns)."""
    if not rows:
        return ""
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    out = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{out}</div>' if scroll else out


def plan_rows(plan) -> list[dict]:
    """One table row per field of a PruningPlan."""
    ev = plan.evaluation or {}
    rows = [("model", f"{plan.model['name']} ({plan.n_layers} layers, fingerprint {plan.model.get('fingerprint')})"),
            ("removed blocks", plan.remove["blocks"]), ("zeroed attention", plan.remove["attn"]),
            ("zeroed MLP", plan.remove["mlp"]), ("kept blocks", plan.kept_blocks()),
            ("method", f"{plan.method['name']} {plan.method.get('parameters') or ''}"),
            ("evaluation", ", ".join(f"{k} {v}" for k, v in ev.items()) or "none"),
            ("notes", " ".join(plan.notes) or "none")]
    return [{"field": k, "value": v} for k, v in rows]


X_KEYS = ("k", "n_removed", "blocks_removed", "fraction_params_removed", "x")


def _series(node, path: str, out: list) -> None:
    """Collect (path, x, {name: y}) groups: a dict holding lists of numbers (or a list of
    point dicts, turned into one) is a group; its x is the first key of X_KEYS it has."""
    if isinstance(node, list) and node and all(isinstance(p, dict) for p in node):
        keys = [k for k in node[0] if all(isinstance(p.get(k), (int, float)) and not isinstance(p.get(k), bool)
                                          for p in node)]
        node = {k: [p[k] for p in node] for k in keys}
    if not isinstance(node, dict):
        return
    numeric = {k: v for k, v in node.items() if isinstance(v, list) and len(v) > 1
               and all(isinstance(x, (int, float)) and not isinstance(x, bool) or x is None for x in v)}
    if numeric:
        x_key = next((k for k in X_KEYS if k in numeric), None)
        ys = {k: v for k, v in numeric.items() if k != x_key}
        if ys:
            out.append((path, numeric.get(x_key), x_key, ys))
    for key, value in node.items():
        if key not in numeric:
            _series(value, f"{path}.{key}" if path else str(key), out)


def curves_figures(curves, max_figures: int = 12) -> list[go.Figure]:
    """Line figures for the numeric series of a `curves` section: one figure per
    top-level entry, one trace per series (y on a log axis when it spans > 50x)."""
    groups: list = []
    _series(curves, "", groups)
    by_top: dict = {}
    for path, x, x_key, ys in groups:
        by_top.setdefault(path.split(".")[0] or "curves", []).append((path, x, x_key, ys))
    figures = []
    for top, items in list(by_top.items())[:max_figures]:
        fig = go.Figure()
        values = []
        for path, x, x_key, ys in items:
            inner = path.partition(".")[2]  # the figure's title already names the top-level entry
            for name, y in ys.items():
                xs = x if x is not None and len(x) == len(y) else list(range(1, len(y) + 1))
                fig.add_trace(go.Scatter(x=xs, y=y, mode="lines+markers", name=f"{inner} {name}".strip()))
                values += [v for v in y if v is not None]
        positive = np.asarray(values, dtype=float)
        log = positive.size and (positive > 0).all() and positive.max() / positive.min() > 50
        fig.update_layout(title=str(top), height=420, yaxis_type="log" if log else None,
                          xaxis_title=items[0][2] or "point", legend={"font": {"size": 10}})
        figures.append(fig)
    return figures
