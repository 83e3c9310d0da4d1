"""Hidden-state similarity across the residual stream h_0..h_L (DESIGN.md section 3).

Accumulates, over representation positions (all non-BOS, or the last token of each
window): the mean per-token cosine matrix, the mean angular distance arccos(cos)/pi,
the mean representation per layer, and a fixed-size, evenly spread sample of positions
for linear CKA. Derived numbers (Block Influence, best contiguous block) are pure
functions of those matrices.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from analysis.core.store import Record

MEASURES = {"cosine": "cos", "angular": "ang", "cka": "cka"}
POSITIONS = {"all": "all non-BOS positions", "last": "last token of each window"}


@dataclass(frozen=True)
class SimilarityResult(Record):
    """Layer x layer matrices over h_0..h_L ([L+1, L+1] each), for all representation
    positions and for the last token of each window, plus the mean representation
    per layer [L+1, d] and how many positions each was averaged over."""

    cos_all: np.ndarray
    ang_all: np.ndarray
    cka_all: np.ndarray
    cos_last: np.ndarray
    ang_last: np.ndarray
    cka_last: np.ndarray
    mean_repr: np.ndarray
    cka_all_positions: int  # positions in the CKA sample
    cka_last_positions: int
    n_positions: int  # representation positions (all non-BOS)
    n_last: int  # last-token positions (one per window)

    ARRAYS = ("cos_all", "ang_all", "cka_all", "cos_last", "ang_last", "cka_last", "mean_repr")

    def matrix(self, measure: str, positions: str) -> np.ndarray:
        """The [L+1, L+1] matrix for a measure ('cosine', 'angular', 'cka') over 'all'/'last'."""
        return getattr(self, f"{MEASURES[measure]}_{positions}")

    def block_influence(self) -> np.ndarray:
        return block_influence(self.cos_all)

    def best_blocks(self) -> list[dict]:
        return best_blocks(self.ang_last)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of x [n, d1] and y [n, d2], rows the same tokens, columns centred:
    ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)."""
    return float(cka_matrix([x, y])[0, 1])


def cka_matrix(layers: list[np.ndarray]) -> np.ndarray:
    """Linear CKA between every pair of [n, d] matrices, through centred Gram matrices
    (tr(Kx Ky) = ||Y^T X||_F^2), summed in float64."""
    grams = []
    for x in layers:  # centring in float64, the n x n Gram product in float32 BLAS (fast)
        xc = np.asarray(x, dtype=np.float64)
        xc = (xc - xc.mean(axis=0, keepdims=True)).astype(np.float32)
        grams.append((xc @ xc.T).astype(np.float64))
    k = len(grams)
    hsic = np.zeros((k, k))
    for i in range(k):
        for j in range(i, k):
            hsic[i, j] = hsic[j, i] = float((grams[i] * grams[j]).sum())
    norms = np.sqrt(np.clip(np.diag(hsic), 1e-300, None))
    return hsic / np.outer(norms, norms)


def block_influence(cos_matrix: np.ndarray) -> np.ndarray:
    """ShortGPT Block Influence BI_l = 1 - mean cos(h_l, h_{l+1}), l = 0..L-1."""
    c = np.asarray(cos_matrix)
    return 1.0 - np.array([c[l, l + 1] for l in range(c.shape[0] - 1)])


def best_blocks(angular: np.ndarray) -> list[dict]:
    """Gromov et al.: for n = 1..L-1 the start l minimising d_l(n) = angular[l, l+n]."""
    a = np.asarray(angular)
    L = a.shape[0] - 1
    out = []
    for n in range(1, L):
        dist = [a[l, l + n] for l in range(L - n + 1)]
        start = int(np.argmin(dist))
        out.append({"n": n, "start": start, "distance": float(dist[start])})
    return out


class SimilarityReducer:
    """Running sums for cosine/angular matrices and the CKA sample."""

    sites = ()

    def __init__(self, n_layers: int, d_model: int, total_positions: int, n_windows: int,
                 cka_sample: int = 1024) -> None:
        k = n_layers + 1
        self.cos_sum = {"all": torch.zeros(k, k, dtype=torch.float64), "last": torch.zeros(k, k, dtype=torch.float64)}
        self.ang_sum = {"all": torch.zeros(k, k, dtype=torch.float64), "last": torch.zeros(k, k, dtype=torch.float64)}
        self.count = {"all": 0, "last": 0}
        self.mean_sum = torch.zeros(k, d_model, dtype=torch.float64)
        self.sample_idx = {
            "all": set(np.unique(np.linspace(0, total_positions - 1, min(cka_sample, total_positions)).round().astype(int)).tolist()),
            "last": set(np.unique(np.linspace(0, n_windows - 1, min(cka_sample, n_windows)).round().astype(int)).tolist()),
        }
        self.samples = {"all": [], "last": []}
        self.seen = {"all": 0, "last": 0}

    def hooks(self, model, first_repr):
        return []

    def _sampled(self, which: str, n: int) -> list[int]:
        """Which of the next n positions belong to the CKA sample."""
        start = self.seen[which]
        return [i for i in range(n) if start + i in self.sample_idx[which]]

    def _fold(self, which: str, unit: torch.Tensor, sample: torch.Tensor | None) -> None:
        """unit [L+1, N, d] (unit-length rows): one set of positions into the running sums;
        sample: the raw residuals [L+1, n, d] of those positions in the CKA sample."""
        cos = torch.einsum("ind,jnd->ijn", unit, unit).clamp(-1.0, 1.0)
        self.cos_sum[which] += cos.sum(-1, dtype=torch.float64).cpu()
        self.ang_sum[which] += (torch.arccos(cos).sum(-1, dtype=torch.float64) / math.pi).cpu()
        if sample is not None:
            self.samples[which].append(sample.float().cpu())
        self.seen[which] += unit.shape[1]
        self.count[which] += unit.shape[1]

    def update(self, model, batch) -> None:
        """Normalises each layer's residual straight into one [L+1, N, d] buffer (no
        stacked copy of the raw residuals); the mean representation is summed and the
        CKA sample's rows picked per layer."""
        s, resid = batch.first_repr, batch.resid
        B, T, d = resid[0].shape
        unit = torch.empty(len(resid), B * (T - s), d, device=resid[0].device)
        keep = self._sampled("all", B * (T - s))
        keep = torch.tensor(keep, device=unit.device) if keep else None
        picked = []
        for i, x in enumerate(resid):
            rep = x[:, s:].float().reshape(-1, d)  # one contiguous copy, summed and normalised from there
            self.mean_sum[i] += rep.sum(0).double().cpu()
            F.normalize(rep, dim=-1, out=unit[i])
            if keep is not None:
                picked.append(rep.index_select(0, keep))
        self._fold("all", unit, torch.stack(picked) if picked else None)
        last = torch.stack([x[:, -1] for x in resid]).float()  # [L+1, B, d]
        keep = self._sampled("last", B)
        self._fold("last", F.normalize(last, dim=-1), last[:, keep] if keep else None)

    def result(self) -> SimilarityResult:
        out = {"mean_repr": (self.mean_sum / max(1, self.count["all"])).numpy(),
               "n_positions": self.count["all"], "n_last": self.count["last"]}
        for which in ("all", "last"):
            n = max(1, self.count[which])
            out[f"cos_{which}"] = (self.cos_sum[which] / n).numpy()
            out[f"ang_{which}"] = (self.ang_sum[which] / n).numpy()
            sample = torch.cat(self.samples[which], dim=1) if self.samples[which] else None
            if sample is None or sample.shape[1] < 2:
                out[f"cka_{which}"] = np.full(out[f"cos_{which}"].shape, np.nan)
            else:
                out[f"cka_{which}"] = cka_matrix([s.numpy() for s in sample])
            out[f"cka_{which}_positions"] = 0 if sample is None else int(sample.shape[1])
        return SimilarityResult(**out)


def layer_map(mean_repr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2-D PCA of the layers' mean representations [L+1, d], each scaled to unit length
    first (the residual norm grows with depth and would otherwise be the only axis).
    Returns coordinates [L+1, 2] and the explained-variance ratio of the two axes."""
    from sklearn.decomposition import PCA

    x = np.asarray(mean_repr, dtype=np.float64)
    x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    pca = PCA(n_components=2, svd_solver="full").fit(x)
    return pca.transform(x), pca.explained_variance_ratio_


def layer_groups(cos_matrix: np.ndarray, n_groups: int, contiguous: bool = True) -> np.ndarray:
    """Agglomerative clustering (average linkage) of h_0..h_L on the distance 1 - mean cos.

    contiguous=True only merges neighbouring groups (a chain connectivity), so each
    group is a run of consecutive layers: a candidate block to prune. Labels are
    renumbered 0, 1, ... in order of the first layer of each group.
    """
    from sklearn.cluster import AgglomerativeClustering

    c = np.asarray(cos_matrix, dtype=np.float64)
    k = c.shape[0]
    dist = np.clip(1.0 - (c + c.T) / 2.0, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    n_groups = int(min(max(1, n_groups), k))
    if n_groups == 1 or k < 2:
        return np.zeros(k, dtype=int)
    connectivity = None
    if contiguous:
        connectivity = np.eye(k, k=1) + np.eye(k, k=-1)
    labels = AgglomerativeClustering(n_clusters=n_groups, metric="precomputed", linkage="average",
                                     connectivity=connectivity).fit_predict(dist)
    order = {label: i for i, label in enumerate(dict.fromkeys(labels.tolist()))}
    return np.array([order[label] for label in labels], dtype=int)
