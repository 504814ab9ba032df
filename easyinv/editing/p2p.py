"""Prompt-to-Prompt (Hertz et al., ICLR 2023) as PnPInversion runs it on PIE-Bench (editing.md §3.2).

Refine (or replace) the target's cross-attention from the source's during the first ``cross_replace`` of the steps,
copy the source's self-attention during the first ``self_replace`` (layers with ≤ ``self_replace_max_tokens``
queries), multiply the target blend word's attention by ``reweight`` inside the cross window, and LocalBlend the
target latent with the source latent outside the blend words' attention masks. Only the conditional half of the
classifier-free-guidance batch is edited. Everything acts per image on the fixed row layout of
:class:`~easyinv.editing.layout.RowLayout`, so a batch of B images equals B single runs.

Upstream quirks reproduced on purpose: blend words are found by splitting the prompt on single spaces (``"cat,"`` is
not ``"cat"``); a word that is not found gives an all-zero map whose normalisation 0/0 yields an empty mask (with
both words missing the target is overwritten by the source from the blend start on). Such words are reported by
:meth:`P2PController.report` and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from easyinv.editing.attention import EditController, LayerInfo
from easyinv.editing.attention_editor import AttentionEditor
from easyinv.editing.layout import RowLayout

__all__ = ["P2PController", "P2PEditor", "cross_window", "equalizer", "refine_mapper",
           "replace_mapper", "self_window", "word_token_indices"]

log = logging.getLogger(__name__)

_MODES = ("refine", "replace")


# -- token bookkeeping (pure) ------------------------------------------------------------------------------------------


def _encode(text: str, tokenizer: Any, max_len: int) -> list[int]:
    """Token ids with BOS/EOS, truncated as the text encoder sees them."""
    return list(tokenizer(text, truncation=True, max_length=max_len).input_ids)


def word_token_indices(text: str, word: str | int, tokenizer: Any) -> list[int]:
    """Token positions (BOS = 0) of a word, found the way Prompt-to-Prompt finds it.

    ``word`` is either a string, matched exactly against the prompt split on single spaces (every occurrence), or a
    word position. The tokens (without BOS/EOS) are walked in order, their decoded lengths accumulated, and a word
    is left once the accumulated length reaches its length. A word that is not in the prompt gives ``[]``.
    """
    words = text.split(" ")
    places = {word} if isinstance(word, int) else {k for k, w in enumerate(words) if w == word}
    if not places:
        return []
    ids = tokenizer.encode(text)[1:-1]
    out: list[int] = []
    length, place = 0, 0
    for k, token in enumerate(ids):
        if place >= len(words):
            break
        length += len(tokenizer.decode([token]).strip("#"))
        if place in places:
            out.append(k + 1)
        if length >= len(words[place]):
            place, length = place + 1, 0
    return out


_LEFT, _UP, _DIAG, _CORNER = 1, 2, 3, 4


def _align(x: list[int], y: list[int]) -> list[int]:
    """Needleman–Wunsch (gap 0, match +1, mismatch −1) of token ids; for each position of ``y`` the aligned
    position of ``x`` or −1. Ties prefer a gap in ``x`` (left), then a gap in ``y`` (up), then the diagonal."""
    gap, match, mismatch = 0, 1, -1
    nx, ny = len(x), len(y)
    score = [[0] * (ny + 1) for _ in range(nx + 1)]
    trace = [[0] * (ny + 1) for _ in range(nx + 1)]
    for j in range(1, ny + 1):
        score[0][j], trace[0][j] = j * gap, _LEFT
    for i in range(1, nx + 1):
        score[i][0], trace[i][0] = i * gap, _UP
    trace[0][0] = _CORNER
    for i in range(1, nx + 1):
        for j in range(1, ny + 1):
            left = score[i][j - 1] + gap
            up = score[i - 1][j] + gap
            diag = score[i - 1][j - 1] + (match if x[i - 1] == y[j - 1] else mismatch)
            best = max(left, up, diag)
            score[i][j] = best
            trace[i][j] = _LEFT if best == left else _UP if best == up else _DIAG
    pairs: list[int] = []  # source position per target position, collected backwards
    i, j = nx, ny
    while (i > 0 or j > 0) and trace[i][j] != _CORNER:
        move = trace[i][j]
        if move == _DIAG:
            i, j = i - 1, j - 1
            pairs.append(i)
        elif move == _LEFT:
            j -= 1
            pairs.append(-1)
        else:
            i -= 1
    pairs.reverse()
    return pairs


def refine_mapper(source: str, target: str, tokenizer: Any, max_len: int | None = None) -> tuple[Tensor, Tensor]:
    """Refine edit's token map: ``mapper[k]`` = source token aligned with target token k (−1: none) and
    ``alpha[k]`` = 1 where it exists, 0 for new tokens; padding positions map to themselves with alpha 1."""
    max_len = max_len or tokenizer.model_max_length
    x, y = _encode(source, tokenizer, max_len), _encode(target, tokenizer, max_len)
    pairs = _align(x, y)
    mapper = torch.zeros(max_len, dtype=torch.int64)
    alpha = torch.ones(max_len)
    mapper[: len(pairs)] = torch.tensor(pairs, dtype=torch.int64)
    alpha[: len(pairs)] = (mapper[: len(pairs)] != -1).float()
    mapper[len(pairs):] = len(y) + torch.arange(max_len - len(y))  # len(pairs) == len(y): each target token once
    return mapper, alpha


def replace_mapper(source: str, target: str, tokenizer: Any, max_len: int | None = None) -> Tensor:
    """Replace edit's ``(max_len, max_len)`` matrix, source token → target token: identity along the aligned
    tokens, a replaced word maps one-to-one when both spellings have as many tokens, else each source token spreads
    ``1/len(target tokens)`` over the target tokens. The prompts must have as many space-separated words. After the
    last replaced word source token i keeps mapping to target token j, where prompt-to-prompt's
    ``get_replacement_mapper`` writes ``[j, j]`` (an index slip that shows once token counts differ)."""
    max_len = max_len or tokenizer.model_max_length
    words_x, words_y = source.split(" "), target.split(" ")
    if len(words_x) != len(words_y):
        raise ValueError(f"P2P replace mode needs prompts with the same number of words, but the source has "
                         f"{len(words_x)} and the target {len(words_y)}: {source!r} vs {target!r}")
    spans = []
    for k in (k for k in range(len(words_y)) if words_x[k] != words_y[k]):
        s = [t for t in word_token_indices(source, k, tokenizer) if t < max_len]
        t = [t for t in word_token_indices(target, k, tokenizer) if t < max_len]
        if s and t:
            spans.append((s, t))
    matrix = torch.zeros(max_len, max_len)
    i = j = n = 0
    while i < max_len and j < max_len:
        if n < len(spans) and spans[n][0][0] == i:
            s, t = spans[n]
            if len(s) == len(t):
                matrix[s, t] = 1.0
            else:
                for col in t:
                    matrix[s, col] = 1.0 / len(t)
            i, j, n = i + len(s), j + len(t), n + 1
        else:
            matrix[i, j] = 1.0
            i, j = i + 1, j + 1
    return matrix


def equalizer(text: str, word: str, factor: float, tokenizer: Any, max_len: int | None = None) -> Tensor:
    """Reweight vector ``(max_len,)``: ones, ``factor`` at the word's tokens (none when the word is missing)."""
    max_len = max_len or tokenizer.model_max_length
    out = torch.ones(max_len)
    out[[t for t in word_token_indices(text, word, tokenizer) if t < max_len]] = factor
    return out


def _bounds(fraction: float | tuple[float, float]) -> tuple[float, float]:
    return (0.0, float(fraction)) if isinstance(fraction, (int, float)) else (float(fraction[0]), float(fraction[1]))


def cross_window(num_steps: int, cross_replace: float | tuple[float, float]) -> Tensor:
    """α_t per step, ``(num_steps + 1,)``: 1 for steps ``[int(a·(T+1)), int(b·(T+1)))``, else 0 (T = 50, 0.4 →
    steps 0–19). The target's cross-attention is ``edited·α_t + own·(1 − α_t)``."""
    lo, hi = _bounds(cross_replace)
    table = torch.zeros(num_steps + 1)
    table[int(lo * (num_steps + 1)): int(hi * (num_steps + 1))] = 1.0
    return table


def self_window(num_steps: int, self_replace: float | tuple[float, float]) -> range:
    """Steps whose self-attention is replaced: ``[int(a·T), int(b·T))`` (T = 50, 0.6 → steps 0–29)."""
    lo, hi = _bounds(self_replace)
    return range(int(num_steps * lo), int(num_steps * hi))


# -- the controller ----------------------------------------------------------------------------------------------------


def _block_slice(index: Tensor) -> slice:
    """A layout block (consecutive rows) as a slice: views instead of gathered copies."""
    start = int(index[0])
    return slice(start, start + len(index))


def _check_knobs(mode: str, cross_replace: Any, self_replace: Any, self_replace_max_tokens: int,
                 blend_threshold: float, blend_start: float, blend_map_size: int | None) -> None:
    if mode not in _MODES:
        raise ValueError(f"P2P mode must be one of {_MODES}, got {mode!r}")
    for label, value in (("cross_replace", cross_replace), ("self_replace", self_replace)):
        lo, hi = _bounds(value)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"P2P {label} must be a fraction in [0, 1] (or a pair lo <= hi), got {value!r}")
    if self_replace_max_tokens < 0:
        raise ValueError(f"self_replace_max_tokens must be >= 0, got {self_replace_max_tokens}")
    if not 0.0 <= blend_threshold < 1.0:
        raise ValueError(f"blend_threshold must be in [0, 1), got {blend_threshold}")
    if not 0.0 <= blend_start <= 1.0:
        raise ValueError(f"blend_start must be in [0, 1], got {blend_start}")
    if blend_map_size is not None and blend_map_size < 1:
        raise ValueError(f"blend_map_size must be >= 1 or null, got {blend_map_size}")


class P2PController(EditController):
    """Prompt-to-Prompt for one batch of B images (4B rows: uncond src, uncond tgt, cond src, cond tgt).

    ``blend_words[b]`` is ``(source word, target word)`` or None; None turns LocalBlend and the reweight off for
    that image (PnPInversion's setting for an empty ``blended_word``); the refine/replace and self-attention edits
    always apply. ``blend_map_size`` is the side of the cross-attention maps LocalBlend reads (None: latent side
    // 4, i.e. 16 for SD at 512 px); the mid block is never read.
    """

    def __init__(self, source_prompts: Sequence[str], target_prompts: Sequence[str],
                 blend_words: Sequence[tuple[str, str] | None] | None, tokenizer: Any, num_steps: int, *,
                 mode: str = "refine", cross_replace: float | tuple[float, float] = 0.4,
                 self_replace: float | tuple[float, float] = 0.6, self_replace_max_tokens: int = 1024,
                 local_blend: bool = True, blend_threshold: float = 0.3, blend_start: float = 0.2,
                 blend_map_size: int | None = None, reweight: float | None = 2.0) -> None:
        super().__init__(num_steps)
        _check_knobs(mode, cross_replace, self_replace, self_replace_max_tokens, blend_threshold, blend_start,
                     blend_map_size)
        images = len(source_prompts)
        if images < 1 or len(target_prompts) != images:
            raise ValueError(f"P2P needs as many target prompts as source prompts (>= 1), got {images} source and "
                             f"{len(target_prompts)} target prompts")
        blend_words = [None] * images if blend_words is None else list(blend_words)
        if len(blend_words) != images:
            raise ValueError(f"blend_words has {len(blend_words)} entries for {images} images")
        self.images = images
        self.mode = mode
        self.self_replace_max_tokens = self_replace_max_tokens
        self.blend_threshold = blend_threshold
        self.blend_map_size = blend_map_size
        self.max_len = int(tokenizer.model_max_length)
        self.cross_alpha = cross_window(num_steps, cross_replace)
        self.self_steps = self_window(num_steps, self_replace)
        self.blend_after = int(blend_start * num_steps)  # LocalBlend from the call with counter > this (1-based)

        pairs = list(zip(source_prompts, target_prompts, strict=True))
        if mode == "refine":
            maps = [refine_mapper(s, t, tokenizer, self.max_len) for s, t in pairs]
            self.mapper = torch.stack([m for m, _ in maps])  # (B, L) source position per target token
            self.alpha = torch.stack([a for _, a in maps])  # (B, L)
        else:
            self.matrix = torch.stack([replace_mapper(s, t, tokenizer, self.max_len) for s, t in pairs])

        L = self.max_len  # noqa: N806
        self.blend_tokens = torch.zeros(images, 2, L)  # (B, [source, target], L) 0/1 word masks
        self.blend_on = torch.zeros(images, dtype=torch.bool)
        self.equalizer = torch.ones(images, L)
        self.reweight_on = False
        self._report: list[dict[str, Any]] = []
        for b, ((src, tgt), words) in enumerate(zip(pairs, blend_words, strict=True)):
            entry: dict[str, Any] = {"image": b, "blend_words": None, "local_blend": False, "reweight": None,
                                     "source_word_found": None, "target_word_found": None, "missing": []}
            if words is not None:
                if len(words) != 2 or not all(isinstance(w, str) for w in words):
                    raise ValueError(f"blend_words[{b}] must be a (source word, target word) pair, got {words!r}")
                entry["blend_words"] = [words[0], words[1]]
                found = []
                for k, (prompt, word) in enumerate(((src, words[0]), (tgt, words[1]))):
                    tokens = [t for t in word_token_indices(prompt, word, tokenizer) if t < L]
                    found.append(tokens)
                    entry[f"{('source', 'target')[k]}_word_found"] = bool(tokens)
                    if not tokens:
                        entry["missing"].append({"prompt": ("source", "target")[k], "word": word})
                        log.warning("P2P image %d: blend word %r not found in the %s prompt %r (split on spaces); "
                                    "its LocalBlend map is empty", b, word, ("source", "target")[k], prompt)
                if local_blend:
                    entry["local_blend"] = True
                    self.blend_on[b] = True
                    for k, tokens in enumerate(found):
                        self.blend_tokens[b, k, tokens] = 1.0
                if reweight is not None and reweight != 1:
                    entry["reweight"] = float(reweight)
                    self.equalizer[b, found[1]] = float(reweight)
                    self.reweight_on = True
            self._report.append(entry)
        self._cache: dict[tuple, dict[str, Tensor]] = {}
        self._store: dict[str, Tensor] = {}  # layer name → (B, 2, heads, queries) blend-word maps summed over steps
        self._map_hw: tuple[int, int] | None = None

    # -- EditController ------------------------------------------------------------------------------------------------

    def begin(self, layout: RowLayout) -> None:
        if layout.images != self.images:
            raise ValueError(f"P2P controller was built for {self.images} images, the layout has {layout.images}")
        super().begin(layout)
        self._store = {}
        self._map_hw = None if self.blend_map_size is None else (self.blend_map_size, self.blend_map_size)

    def explicit(self, layer: LayerInfo, n_queries: int) -> bool:
        return layer.kind == "cross" or n_queries <= self.self_replace_max_tokens

    def edit_probs(self, layer: LayerInfo, probs: Tensor) -> Tensor:
        """Edit the conditional target rows in place (the processor's own tensor; no copy of a 32² map)."""
        if not self.active:
            return probs
        layout = self._rows(probs.shape[0])
        src, tgt = _block_slice(layout.cond_source), _block_slice(layout.cond_target)
        if layer.kind == "cross":
            a = float(self.cross_alpha[self.step]) if self.step < len(self.cross_alpha) else 0.0
            if a > 0:
                edited = self._cross_edit(probs[src], probs[tgt])
                if a != 1:
                    edited = edited * a + probs[tgt] * (1 - a)
                probs[tgt] = edited
            self._record(layer, probs[src], probs[tgt])  # upstream stores the edited maps (its edit is in place)
        elif self.step in self.self_steps and probs.shape[2] <= self.self_replace_max_tokens:
            probs[tgt] = probs[src]
        return probs

    def after_step(self, z_source: Tensor, z_target: Tensor) -> Tensor:
        """LocalBlend: ``z_tgt ← z_src + mask·(z_tgt − z_src)`` for images with blend words, from the step with
        1-based counter > ``int(blend_start·T)``."""
        if not self.active or not bool(self.blend_on.any()) or self.step + 1 <= self.blend_after:
            return z_target
        mask = self.blend_mask(z_target.shape[-2:]).to(z_target.device)
        blended = z_source + mask.to(z_target.dtype) * (z_target - z_source)
        on = self.blend_on.to(z_target.device).view(-1, *([1] * (z_target.ndim - 1)))
        return torch.where(on, blended, z_target)

    def report(self) -> list[dict[str, Any]]:
        """Per image: blend words, whether LocalBlend/reweight are on, ``{source,target}_word_found`` (None without
        blend words) and ``missing``, a list of ``{"prompt": "source"|"target", "word": ...}``."""
        return [dict(entry, missing=list(entry["missing"])) for entry in self._report]

    # -- internals -----------------------------------------------------------------------------------------------------

    def _tensors(self, like: Tensor) -> dict[str, Tensor]:
        """The per-image edit tensors on ``like``'s device and dtype (cached)."""
        key = (like.device, like.dtype)
        if key not in self._cache:
            out = {"equalizer": self.equalizer.to(like.device, like.dtype)[:, None, None, :]}
            if self.mode == "refine":
                out["mapper"] = self.mapper.clamp(min=0).to(like.device)  # −1 entries are weighted by alpha 0
                out["alpha"] = self.alpha.to(like.device, like.dtype)[:, None, None, :]
            else:
                out["matrix"] = self.matrix.to(like.device, like.dtype)
            out["blend_tokens"] = self.blend_tokens.to(like.device, like.dtype)
            self._cache[key] = out
        return self._cache[key]

    def _cross_edit(self, src: Tensor, tgt: Tensor) -> Tensor:
        """Edited target cross-attention ``(B, heads, q, L)`` from the source's: refine/replace, then reweight."""
        t = self._tensors(src)
        if src.shape[-1] != self.max_len:
            raise ValueError(f"P2P expects {self.max_len} text tokens in cross-attention, got {src.shape[-1]}")
        if self.mode == "refine":
            index = t["mapper"][:, None, None, :].expand(*src.shape[:-1], self.max_len)
            out = src.gather(-1, index) * t["alpha"] + tgt * (1 - t["alpha"])
        else:
            out = torch.einsum("bhqw,bwn->bhqn", src, t["matrix"])
        if self.reweight_on:
            out = out * t["equalizer"]
        return out

    def _record(self, layer: LayerInfo, src: Tensor, tgt: Tensor) -> None:
        """Accumulate the blend words' cross-attention (summed over their tokens) of a candidate LocalBlend layer."""
        if not bool(self.blend_on.any()) or layer.block == "mid":
            return
        n_queries = src.shape[2]
        if self._map_hw is not None and n_queries != self._map_hw[0] * self._map_hw[1]:
            return
        words = self._tensors(src)["blend_tokens"]
        maps = torch.stack([torch.einsum("bhqk,bk->bhq", src, words[:, 0]),
                            torch.einsum("bhqk,bk->bhq", tgt, words[:, 1])], dim=1).float()
        if layer.name in self._store:
            self._store[layer.name] += maps
        else:
            self._store[layer.name] = maps

    @property
    def blend_layers(self) -> list[str]:
        """The layers LocalBlend reads, in execution order (empty until the map size is known: set, or resolved
        from the latent at the first blend)."""
        if self._map_hw is None:
            return []
        return [name for name, maps in self._store.items() if maps.shape[-1] == self._map_hw[0] * self._map_hw[1]]

    def blend_mask(self, latent_hw: Sequence[int]) -> Tensor:
        """LocalBlend mask ``(B, 1, h, w)`` (bool) from the stored maps: mean over heads and layers, 3×3 max-pool,
        nearest resize to the latent, divide by the max, ``> threshold``, source mask OR target mask."""
        h, w = int(latent_hw[0]), int(latent_hw[1])
        if self._map_hw is None:
            self._map_hw = (h // 4, w // 4)
        mh, mw = self._map_hw
        names = [name for name, maps in self._store.items() if maps.shape[-1] == mh * mw]
        if not names:
            seen = sorted({int(maps.shape[-1]) for maps in self._store.values()})
            raise ValueError(f"LocalBlend reads {mh}x{mw} cross-attention maps but no cross-attention layer outside "
                             f"the mid block has {mh * mw} queries (query counts seen: {seen}); set blend_map_size")
        self._store = {name: self._store[name] for name in names}  # the other resolutions are never read
        maps = torch.cat([self._store[name] for name in names], dim=2).mean(2)  # (B, 2, q)
        maps = maps.reshape(self.images * 2, 1, mh, mw)
        maps = F.max_pool2d(maps, kernel_size=3, stride=1, padding=1)
        maps = F.interpolate(maps, size=(h, w))  # nearest
        maps = maps / maps.amax(dim=(2, 3), keepdim=True)  # a missing word: 0/0 = NaN, never above the threshold
        mask = (maps > self.blend_threshold).view(self.images, 2, 1, h, w)
        return mask[:, 0] | mask[:, 1]


# -- the editor (what configs/edit/p2p.yaml instantiates) --------------------------------------------------------------


@dataclass(frozen=True)
class P2PEditor(AttentionEditor):
    """Prompt-to-Prompt editor settings (defaults: PnPInversion's PIE-Bench run); builds a controller per batch."""

    name: str = "p2p"
    mode: str = "refine"
    cross_replace: float = 0.4
    self_replace: float = 0.6
    self_replace_max_tokens: int = 1024
    local_blend: bool = True
    blend_threshold: float = 0.3
    blend_start: float = 0.2
    blend_map_size: int | None = None
    reweight: float | None = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_knobs(self.mode, self.cross_replace, self.self_replace, self.self_replace_max_tokens,
                     self.blend_threshold, self.blend_start, self.blend_map_size)

    def controller(self, source_prompts: Sequence[str], target_prompts: Sequence[str],
                   blend_words: Sequence[tuple[str, str] | None] | None, tokenizer: Any,
                   num_steps: int) -> P2PController:
        """A fresh controller for one batch."""
        return P2PController(source_prompts, target_prompts, blend_words, tokenizer, num_steps, mode=self.mode,
                             cross_replace=self.cross_replace, self_replace=self.self_replace,
                             self_replace_max_tokens=self.self_replace_max_tokens, local_blend=self.local_blend,
                             blend_threshold=self.blend_threshold, blend_start=self.blend_start,
                             blend_map_size=self.blend_map_size, reweight=self.reweight)
