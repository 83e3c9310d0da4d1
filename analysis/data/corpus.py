"""Calibration corpora and the corpus protocol (DESIGN.md section 3).

A corpus is named by an id: `builtin:<name>` for a text shipped in analysis/data/corpora/,
`builtin:all` for all of them together, or the sha256 of pasted/uploaded text stored
under cache/corpora/<sha256>.txt (so that a shared link can name it later).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor

from analysis.core import settings, store

BUILTIN_DIR = Path(__file__).resolve().parent / "corpora"
_SHA = re.compile(r"^[0-9a-f]{64}$")
MAX_SEQ_LEN = 4096  # the longest window anywhere: corpus protocol, sidebar, links, CLI


class CorpusError(Exception):
    """The corpus or its windowing settings are unusable; the message is for the user."""


@dataclass(frozen=True)
class Corpus:
    corpus_id: str
    text: str

    @property
    def sha256(self) -> str:
        return text_sha256(self.text)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.txt"))


def builtin_ids() -> list[str]:
    return ["builtin:all"] + [f"builtin:{n}" for n in builtin_names()]


def corpora_dir() -> Path:
    path = settings.cache_dir() / "corpora"
    path.mkdir(parents=True, exist_ok=True)
    return path


def validate_text(text: str) -> str:
    """Reject empty, whitespace-only, binary or oversized text with a clear message."""
    if "\x00" in text:
        raise CorpusError("The corpus looks like a binary file (it contains NUL bytes); use plain text.")
    if len(text.encode("utf-8")) > settings.max_upload_bytes():
        mb = settings.max_upload_bytes() / 1024 / 1024
        raise CorpusError(f"The corpus is larger than this server's limit of {mb:g} MB.")
    if not text.strip():
        raise CorpusError("The corpus is empty or whitespace only.")
    return text


def decode_upload(data: bytes) -> str:
    """Bytes of an uploaded .txt file -> text, refusing binary content."""
    if len(data) > settings.max_upload_bytes():
        mb = settings.max_upload_bytes() / 1024 / 1024
        raise CorpusError(f"The file is larger than this server's limit of {mb:g} MB.")
    if b"\x00" in data:
        raise CorpusError("The file looks binary (it contains NUL bytes); upload plain UTF-8 text.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(f"The file is not UTF-8 text (byte {err.start} cannot be decoded).") from err


def store_text(text: str) -> Corpus:
    """Validate pasted/uploaded text and keep it under cache/corpora/<sha256>.txt, atomically."""
    validate_text(text)
    sha = text_sha256(text)
    path = corpora_dir() / f"{sha}.txt"
    if not path.is_file():
        store.write_text_atomic(path, text)
    return Corpus(sha, text)


def load_corpus(corpus_id: str) -> Corpus:
    """Resolve a corpus id (built-in name or stored sha256) to its text."""
    corpus_id = (corpus_id or "").strip()
    if corpus_id == "builtin:all":
        parts = [(BUILTIN_DIR / f"{n}.txt").read_text(encoding="utf-8") for n in builtin_names()]
        return Corpus(corpus_id, "\n\n".join(parts))
    if corpus_id.startswith("builtin:"):
        name = corpus_id.split(":", 1)[1]
        if name not in builtin_names():
            raise CorpusError(f"Unknown built-in corpus {name!r}.")
        return Corpus(corpus_id, (BUILTIN_DIR / f"{name}.txt").read_text(encoding="utf-8"))
    if not _SHA.match(corpus_id):
        raise CorpusError(f"Unknown corpus {corpus_id[:80]!r}: not a built-in id and not a sha256.")
    path = corpora_dir() / f"{corpus_id}.txt"
    if not path.is_file():
        raise CorpusError(f"No stored corpus with sha256 {corpus_id[:12]}...; upload it again.")
    text = path.read_text(encoding="utf-8")
    if text_sha256(text) != corpus_id:
        raise CorpusError(f"The stored corpus {corpus_id[:12]}... is corrupt; upload it again.")
    return Corpus(corpus_id, text)


def load_file(path: str | Path) -> Corpus:
    """A corpus from a text file on disk (CLI); also accepts a built-in id."""
    text_path = Path(path)
    if str(path).startswith("builtin:"):
        return load_corpus(str(path))
    if not text_path.is_file():
        raise CorpusError(f"Corpus file not found: {path}")
    text = decode_upload(text_path.read_bytes())
    validate_text(text)
    return Corpus(text_sha256(text), text)


def token_ids(tokenizer, text: str) -> list[int]:
    """The corpus' tokens (no special tokens), refusing unusable text and fewer than 2
    tokens (nothing to predict); the sidebar checks a pasted corpus with it at once."""
    validate_text(text)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < 2:
        raise CorpusError("The corpus has fewer than 2 tokens; nothing can be predicted.")
    return ids


def make_windows(tokenizer, text: str, seq_len: int, n_ctx: int | None = None,
                 max_windows: int | None = None) -> Int[Tensor, "windows pos"]:
    """Token windows [n_windows, seq_len (+1 with BOS)] following the corpus protocol.

    The text is tokenized without special tokens and cut into consecutive,
    non-overlapping windows of `seq_len` tokens; the remainder is dropped, except that a
    corpus shorter than one window gives one shorter window. The BOS token is prepended
    to every window when the tokenizer has one.
    """
    if not isinstance(seq_len, int) or seq_len < 2:
        raise CorpusError("seq_len must be an integer of at least 2.")
    bos = tokenizer.bos_token_id
    limit = min(n_ctx or MAX_SEQ_LEN, MAX_SEQ_LEN)
    if seq_len + (1 if bos is not None else 0) > limit:
        raise CorpusError(f"seq_len {seq_len} exceeds the model's context of {limit} tokens.")
    ids = token_ids(tokenizer, text)
    n = max(1, len(ids) // seq_len)
    if max_windows is not None:
        if max_windows < 1:
            raise CorpusError("max_windows must be at least 1.")
        n = min(n, max_windows)
    width = min(seq_len, len(ids))
    windows = torch.tensor(ids[: n * width], dtype=torch.long).view(n, width)
    if bos is not None:
        windows = torch.cat([torch.full((n, 1), bos, dtype=torch.long), windows], dim=1)
    return windows


def plural(n: int, noun: str) -> str:
    """`n` and `noun`, plural unless n is 1: plural(1, "held-out window") -> "1 held-out window"."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def has_bos(tokenizer) -> bool:
    return tokenizer.bos_token_id is not None


HOLDOUT_EVERY = 5


def split_windows(windows: torch.Tensor, every: int = HOLDOUT_EVERY) -> tuple[torch.Tensor, torch.Tensor]:
    """(calibration, evaluation) windows: every `every`-th window (indices every-1,
    2*every-1, ...) is held out for evaluation, the rest is for calibration (DESIGN.md
    section 3). Disjoint by construction; fewer than `every` windows cannot be split."""
    if not isinstance(every, int) or every < 2:
        raise CorpusError("the held-out split needs every >= 2.")
    n = windows.shape[0]
    if n < every:
        raise CorpusError(f"Holding out every {every}th window needs at least {every} windows; this corpus gives "
                          f"{n}. Use a longer corpus, a shorter seq_len, or name an evaluation corpus.")
    held = torch.zeros(n, dtype=torch.bool)
    held[every - 1::every] = True
    return windows[~held], windows[held]
