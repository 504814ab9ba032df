"""Text conditioning for SD-1.x and SD-XL: prompt embeddings, the explicit "empty prompt", and SD-XL time ids.

Written against the documented behaviour of diffusers' ``encode_prompt`` (ecosystem.md §2.5) and checked against it in
``tests/test_ddim_reference.py``:

- SD-1.x: last hidden state of the CLIP text encoder on the prompt padded to 77 tokens.
- SD-XL: penultimate hidden states of both encoders, concatenated on channels; the pooled vector is the projected
  output of encoder 2. The UNet also receives ``time_ids = (orig_h, orig_w, crop_top, crop_left, target_h, target_w)``.

The unconditional branch is either ``encode("")`` or all zeros (SD-XL's ``force_zeros_for_empty_prompt``, what the
SD-XL pipelines and the released EasyInv SD-XL code use); :func:`resolve_null_embedding` makes that choice explicit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "NULL_EMBEDDINGS",
    "PromptEncoder",
    "TextConditioning",
    "check_time_embedding",
    "resolve_null_embedding",
    "sdxl_time_ids",
    "stack_conditioning",
]

NULL_EMBEDDINGS = ("auto", "encode_empty", "zeros")


@dataclass(frozen=True)
class TextConditioning:
    """Conditioning of one prompt: token embeddings ``(L, D)`` and, for SD-XL, the pooled vector ``(P,)``."""

    embeds: Tensor
    pooled: Tensor | None = None

    def same_as(self, other: TextConditioning) -> bool:
        """Exact equality: CFG between equal conditionings is a no-op and is skipped."""
        if not torch.equal(self.embeds, other.embeds):
            return False
        if self.pooled is None or other.pooled is None:
            return self.pooled is None and other.pooled is None
        return torch.equal(self.pooled, other.pooled)

    def zeros_like(self) -> TextConditioning:
        return TextConditioning(
            torch.zeros_like(self.embeds), None if self.pooled is None else torch.zeros_like(self.pooled)
        )


def stack_conditioning(items: Sequence[TextConditioning]) -> tuple[Tensor, Tensor | None]:
    """Batch per-row conditionings: ``(B, L, D)`` and ``(B, P)`` (or ``None``)."""
    embeds = torch.stack([c.embeds for c in items])
    pooled = None if items[0].pooled is None else torch.stack([c.pooled for c in items])
    return embeds, pooled


def resolve_null_embedding(mode: str, family: str, force_zeros_for_empty_prompt: bool) -> str:
    """``auto`` → ``zeros`` on SD-XL checkpoints that ask for it (model_index.json), else ``encode_empty``."""
    if mode not in NULL_EMBEDDINGS:
        raise ValueError(f"model.load.null_embedding must be one of {NULL_EMBEDDINGS}, got {mode!r}")
    if mode != "auto":
        return mode
    return "zeros" if family == "sdxl" and force_zeros_for_empty_prompt else "encode_empty"


class PromptEncoder:
    """Encodes prompt strings once each (cached) with the family's text encoder(s)."""

    def __init__(
        self, family: str, tokenizers: Sequence, text_encoders: Sequence[torch.nn.Module], device: torch.device
    ):
        if len(tokenizers) != len(text_encoders) or len(text_encoders) != {"sd1": 1, "sdxl": 2}[family]:
            raise ValueError(f"{family} needs {'one' if family == 'sd1' else 'two'} tokenizer/text-encoder pair(s)")
        self.family = family
        self.tokenizers = list(tokenizers)
        self.text_encoders = list(text_encoders)
        self.device = device
        self._cache: dict[str, TextConditioning] = {}

    @property
    def projection_dim(self) -> int | None:
        """Size of SD-XL's pooled vector (encoder 2's projection), ``None`` on SD-1.x."""
        return int(self.text_encoders[-1].config.projection_dim) if self.family == "sdxl" else None

    def _token_ids(self, tokenizer, prompt: str) -> Tensor:
        ids = tokenizer(
            prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        return ids.to(self.device)

    @torch.no_grad()
    def _encode(self, prompt: str) -> TextConditioning:
        if self.family == "sd1":
            (encoder,), (tokenizer,) = self.text_encoders, self.tokenizers
            return TextConditioning(encoder(self._token_ids(tokenizer, prompt))[0][0])
        hidden, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.text_encoders, strict=True):
            out = encoder(self._token_ids(tokenizer, prompt), output_hidden_states=True)
            hidden.append(out.hidden_states[-2][0])
            pooled = out[0][0]  # encoder 2 (with projection) comes last: its text_embeds are the pooled vector
        return TextConditioning(torch.cat(hidden, dim=-1), pooled)

    def __call__(self, prompt: str) -> TextConditioning:
        if prompt not in self._cache:
            self._cache[prompt] = self._encode(prompt)
        return self._cache[prompt]

    def null(self, mode: str) -> TextConditioning:
        """The unconditional branch: ``encode_empty`` = encode(""), ``zeros`` = zeros shaped like it."""
        if mode == "encode_empty":
            return self("")
        if mode == "zeros":
            return self("").zeros_like()
        raise ValueError(f"null embedding must be 'encode_empty' or 'zeros' here, got {mode!r}")


def sdxl_time_ids(height: int, width: int, crop_top_left: tuple[int, int] = (0, 0)) -> tuple[int, ...]:
    """SD-XL micro-conditioning ``original_size + crop_top_left + target_size``; original = target = the image size.

    Inverted images are resized to the working resolution, so the size the UNet is told is the size it sees.
    """
    return (int(height), int(width), int(crop_top_left[0]), int(crop_top_left[1]), int(height), int(width))


def check_time_embedding(unet: torch.nn.Module, projection_dim: int) -> None:
    """SD-XL UNets embed 6 time ids and the pooled text vector together; refuse mismatched encoders early."""
    expected = int(unet.config.addition_time_embed_dim) * 6 + int(projection_dim)
    actual = int(unet.add_embedding.linear_1.in_features)
    if expected != actual:
        raise ValueError(
            f"model: addition_time_embed_dim*6 + projection_dim = {expected} but the UNet's add_embedding expects "
            f"{actual}; text_encoder_2 does not match this UNet"
        )
