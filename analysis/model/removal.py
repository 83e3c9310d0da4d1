"""What a removal is: sets of layers removed per kind (blocks, attention, MLP), and the
zeroing hooks that apply one to the bridge's forward (DESIGN.md section 3). Block l
removed: its output equals its input; attention l removed: `blocks.l.hook_attn_out` is
zero; MLP l removed: `blocks.l.hook_mlp_out` is zero.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from analysis.core.kinds import KINDS  # noqa: F401 (the kinds of removal, re-exported)
from analysis.model import hooks



@dataclass(frozen=True)
class Removal:
    """Sets of 0-based layer indices removed, per kind."""

    blocks: frozenset = field(default_factory=frozenset)
    attn: frozenset = field(default_factory=frozenset)
    mlp: frozenset = field(default_factory=frozenset)

    @classmethod
    def of(cls, blocks=(), attn=(), mlp=()) -> "Removal":
        return cls(frozenset(int(x) for x in blocks), frozenset(int(x) for x in attn), frozenset(int(x) for x in mlp))

    def zeroed(self) -> tuple[set, set]:
        """Layers whose attention / MLP output is zero (a removed block zeroes both)."""
        return set(self.attn) | set(self.blocks), set(self.mlp) | set(self.blocks)

    def first_layer(self) -> int | None:
        layers = set(self.blocks) | set(self.attn) | set(self.mlp)
        return min(layers) if layers else None

    def first_difference(self, other: "Removal") -> int | None:
        """The first layer at which the two removals differ (None: they are equal); before
        it, both run the same model."""
        layers = (self.blocks ^ other.blocks) | (self.attn ^ other.attn) | (self.mlp ^ other.mlp)
        return min(layers) if layers else None

    def is_empty(self) -> bool:
        return self.first_layer() is None

    def to_dict(self) -> dict:
        return {k: sorted(getattr(self, k)) for k in KINDS}


class RemovalHooks:
    """Zeroing hooks on every attention/MLP output whose active set can be switched
    between forwards, so one hook context serves a whole sweep."""

    def __init__(self, n_layers: int) -> None:
        self.attn: set = set()
        self.mlp: set = set()
        self.n_layers = n_layers

    def set(self, removal: Removal) -> None:
        self.attn, self.mlp = removal.zeroed()

    def _zero(self, layers_attr: str, layer: int):
        def hook(tensor, hook):
            return torch.zeros_like(tensor) if layer in getattr(self, layers_attr) else tensor
        return hook

    def fwd_hooks(self) -> list:
        return [(hooks.sublayer_out(kind, l), self._zero(kind, l)) for kind in ("attn", "mlp")
                for l in range(self.n_layers)]
