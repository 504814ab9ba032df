"""CLIP image-text similarity as torchmetrics' ``CLIPScore`` defines it, computed by us (editing.md §2.2, §4).

Why not torchmetrics: with the pinned transformers 5.24, ``CLIPModel.get_image_features`` returns an output object
(projected embedding in ``.pooler_output``) and torchmetrics 1.9's ``CLIPScore`` fails on it. The definition is
simple enough to own: the CLIP processor's preprocessing, projected image and text embeddings, L2-normalised,
``score = max(100 * cos, 0)``, texts truncated to the model's 77 positions.

Preprocessing uses transformers' PIL backend of the CLIP image processor (shortest side → 224 bicubic, centre crop,
CLIP mean/std): the reference ran before transformers defaulted to its torchvision backend, whose bicubic resize
differs slightly.

Weights come only from a local folder holding the Hugging Face repository ``openai/clip-vit-large-patch14``
(``local_files_only=True``); a tiny seeded random CLIP serves tests, its scores flagged as not comparable.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["CLIP_REPO", "ClipScorer", "ClipWeightsMissingError", "pooled"]

CLIP_REPO = "openai/clip-vit-large-patch14"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # the order in which transformers looks for them


class ClipWeightsMissingError(FileNotFoundError):
    """The local CLIP folder is missing (the hub is never contacted)."""


def pooled(output: Any) -> Tensor:
    """The projected embedding of ``get_image_features``/``get_text_features``: a tensor in transformers 4, the
    ``pooler_output`` of an output object in transformers 5."""
    return output if isinstance(output, Tensor) else output.pooler_output


def _as_image(image_u8: np.ndarray) -> np.ndarray:
    image = np.asarray(image_u8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"CLIP expects uint8 (H, W, 3) images, got {image.dtype} {image.shape}")
    return image


class ClipScorer:
    """``max(100 * cos(image, text), 0)`` for uint8 (H, W, 3) images and strings, one model, one processor."""

    def __init__(self, model: Any, processor: Any, *, device: str | torch.device = "cpu",
                 info: dict[str, Any] | None = None) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.processor = processor
        self.max_length = int(model.config.text_config.max_position_embeddings)
        self.info = dict(info or {})

    @classmethod
    def from_folder(cls, path: str | Path, *, device: str | torch.device = "cpu") -> ClipScorer:
        """Load ``CLIPModel`` and ``CLIPProcessor`` (PIL image backend) from a local folder; never the hub."""
        from transformers import CLIPModel, CLIPProcessor

        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ClipWeightsMissingError(
                f"CLIP folder not found at {folder}; it must be a local copy of the Hugging Face repository "
                f"{CLIP_REPO} (set edit_metrics.clip.path)"
            )
        model = CLIPModel.from_pretrained(folder, local_files_only=True)
        processor = CLIPProcessor.from_pretrained(folder, local_files_only=True, backend="pil")
        weights = next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)
        info = {"weights": str(folder), "weights_file": str(weights) if weights else None, "random": False}
        return cls(model.float(), processor, device=device, info=info)

    @classmethod
    def tiny(cls, seed: int = 0, *, device: str | torch.device = "cpu") -> ClipScorer:
        """A seeded random CLIP (hidden 32, projection 16, 32 px images) with the harness's offline tokenizer."""
        from transformers import (
            CLIPConfig,
            CLIPImageProcessorPil,
            CLIPModel,
            CLIPProcessor,
            CLIPTextConfig,
            CLIPTokenizer,
            CLIPVisionConfig,
        )

        from easyinv.models.tiny import write_clip_tokenizer

        with tempfile.TemporaryDirectory(prefix="easyinv-tiny-clip-") as tmp:
            vocab_size = write_clip_tokenizer(Path(tmp))
            tokenizer = CLIPTokenizer.from_pretrained(tmp, local_files_only=True)
        image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
        text = CLIPTextConfig(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=77, projection_dim=16, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )
        vision = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
                                  num_hidden_layers=2, num_attention_heads=4, projection_dim=16)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                         projection_dim=16))
        info = {"weights": f"random (seed {seed})", "weights_file": None, "random": True}
        return cls(model, processor, device=device, info=info)

    @torch.no_grad()
    def embeddings(self, images: Sequence[np.ndarray], texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """L2-normalised projected embeddings, (n_images, P) and (n_texts, P), float32."""
        batch = self.processor(
            text=list(texts), images=[_as_image(i) for i in images], return_tensors="pt", padding=True,
            truncation=True, max_length=self.max_length,
        )
        batch = {k: v.to(self.device) for k, v in batch.items()}
        image = pooled(self.model.get_image_features(pixel_values=batch["pixel_values"])).float()
        text = pooled(self.model.get_text_features(input_ids=batch["input_ids"],
                                                   attention_mask=batch["attention_mask"])).float()
        return image / image.norm(p=2, dim=-1, keepdim=True), text / text.norm(p=2, dim=-1, keepdim=True)

    def cosine(self, image_u8: np.ndarray, text: str) -> float:
        """Cosine similarity of one image and one text (unclamped, unscaled)."""
        image, txt = self.embeddings([image_u8], [text])
        return float((image * txt).sum(dim=-1)[0])

    def score(self, image_u8: np.ndarray, text: str) -> float:
        """``max(100 * cos, 0)``: torchmetrics' CLIPScore for one pair (PnPInversion's CLIP similarity)."""
        return max(100.0 * self.cosine(image_u8, text), 0.0)

    @property
    def comparable(self) -> bool:
        """True only with real weights loaded from a folder."""
        return not self.info.get("random", True)

    def describe(self) -> dict[str, Any]:
        """Model, preprocessing and score definition, for the run manifest (weights sha256 added by the caller)."""
        ip = self.processor.image_processor
        return {
            "impl": "easyinv.editing.clip_score (own CLIPScore: max(100 * cos, 0))",
            "model": CLIP_REPO if self.comparable else "tiny random CLIP",
            **self.info,
            "image_processor": type(ip).__name__,
            "preprocess": {"size": dict(ip.size), "crop_size": dict(ip.crop_size), "resample": int(ip.resample)},
            "text_max_length": self.max_length,
            "text_truncation": True,
            "transformers_version": importlib.metadata.version("transformers"),
        }
