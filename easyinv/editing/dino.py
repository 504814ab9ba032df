"""DINO ViT and the structure distance of PnPInversion's PIE-Bench evaluation (editing.md §2.2, §4).

Why our own ViT: the reference loads ``dino_vitb8`` through torch hub (network at run time), and the transformers 5
``ViTModel`` renamed its modules, so neither is usable offline and stable. This module is a plain ViT whose parameter
names are those of the upstream checkpoint ``dino_vitbase8_pretrain.pth`` (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``; LayerNorm eps 1e-6,
qkv with bias), so that file loads with ``strict=True`` from a configured path. Nothing is ever downloaded.

Structure distance (Splice's DINO self-similarity loss, as PnPInversion computes it):

1. the uint8 image as float — in ``pnp_compat`` mode **still in [0, 255]** (the reference never divides by 255);
2. torchvision ``resize`` of the shorter side to 224, ``max_size=480``, bilinear (antialiasing configurable: it depends
   on the unknown reference torchvision version; off by default), then ImageNet normalisation of those values;
3. the keys of the last block: the middle third of its ``qkv`` output on ``norm1(x)``, all tokens (CLS + patches),
   heads concatenated (768-d for B/8);
4. the cosine self-similarity matrix of the keys (norm product clamped at 1e-8);
5. ``F.mse_loss`` between the source's and the edit's matrices.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DINO_FILE",
    "DINO_URL",
    "VITB8",
    "DinoViT",
    "DinoWeightsMissingError",
    "StructureDistance",
    "build_dino_vit",
    "dino_input",
    "load_dino_vit",
    "load_dino_vitb8",
    "self_similarity",
    "tiny_dino_vit",
]

DINO_FILE = "dino_vitbase8_pretrain.pth"
DINO_URL = "https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth"
VITB8: dict[str, int] = {"embed_dim": 768, "depth": 12, "num_heads": 12, "patch_size": 8, "img_size": 224}
TINY: dict[str, int] = {"embed_dim": 32, "depth": 2, "num_heads": 4, "patch_size": 8, "img_size": 224}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_SHORT, RESIZE_MAX = 224, 480
COSINE_EPS = 1e-8


class DinoWeightsMissingError(FileNotFoundError):
    """The DINO checkpoint is not on disk (it is never downloaded)."""


# --------------------------------------------------------------------------------------------------------------------
# The network, in the upstream checkpoint's layout
# --------------------------------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Non-overlapping patches → tokens by one strided convolution (``patch_embed.proj``)."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, rows*cols, D), row-major


class Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection laid out as (3, heads, head_dim)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ / sqrt(head_dim)) v
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Two-layer GELU MLP (``mlp.fc1``, ``mlp.fc2``), hidden width ``mlp_ratio`` x embed."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DinoViT(nn.Module):
    """DINO's ViT backbone without a head (``num_classes=0`` upstream, so the checkpoint has no head weights)."""

    def __init__(
        self, embed_dim: int, depth: int, num_heads: int, patch_size: int = 8, img_size: int = 224,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.arch = {"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads, "patch_size": patch_size,
                     "img_size": img_size}
        self.grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        if not self.cls_token.is_meta:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    @property
    def patch_size(self) -> int:
        return self.patch_embed.patch_size

    def position_embedding(self, rows: int, cols: int) -> Tensor:
        """Positional embedding for a rows x cols token grid (plus CLS).

        The checkpoint's grid (28x28 at 224 px / patch 8) is used as is; another grid is interpolated bicubically with
        DINO's recipe (scale factors ``(rows + 0.1) / grid``, ``(cols + 0.1) / grid``), needed only for non-square
        inputs, which PIE-Bench (512x512 → 224x224) never has.
        """
        if (rows, cols) == (self.grid, self.grid):
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        dim = patch_pos.shape[-1]
        grid = patch_pos.reshape(1, self.grid, self.grid, dim).permute(0, 3, 1, 2)
        scale = ((rows + 0.1) / self.grid, (cols + 0.1) / self.grid)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False)
        if grid.shape[-2:] != (rows, cols):
            raise RuntimeError(f"position embedding interpolation gave {tuple(grid.shape[-2:])}, not {(rows, cols)}")
        return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)], dim=1)

    def tokens(self, x: Tensor) -> Tensor:
        """Images (B, 3, H, W) → input tokens (B, 1 + rows*cols, D): CLS first, then patches row-major."""
        b, _, h, w = x.shape
        rows, cols = h // self.patch_size, w // self.patch_size
        patches = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(b, -1, -1), patches], dim=1)
        return x + self.position_embedding(rows, cols)

    def forward(self, x: Tensor) -> Tensor:
        """The normalised CLS token (B, D), DINO's image feature (kept for completeness; the metric uses keys)."""
        x = self.tokens(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]

    def last_block_keys(self, x: Tensor) -> Tensor:
        """Keys of the last block, (B, tokens, D): the middle third of ``qkv(norm1(x))``, heads concatenated.

        The fused projection's output is laid out (q | k | v), each (heads x head_dim), so its middle third is the
        keys of all heads side by side — what a forward hook on ``blocks[-1].attn.qkv`` would see, without running
        the last block's attention and MLP.
        """
        x = self.tokens(x)
        for block in self.blocks[:-1]:
            x = block(x)
        last = self.blocks[-1]
        dim = x.shape[-1]
        return last.attn.qkv(last.norm1(x))[..., dim : 2 * dim]


# --------------------------------------------------------------------------------------------------------------------
# Construction and loading
# --------------------------------------------------------------------------------------------------------------------


def build_dino_vit(
    embed_dim: int = 768, depth: int = 12, num_heads: int = 12, patch_size: int = 8, img_size: int = 224,
    seed: int | None = None,
) -> DinoViT:
    """A randomly initialised ViT of the given shape (ViT-B/8 by default), drawn from ``seed`` when given.

    The global RNG is left untouched when a seed is given, so building a test model never shifts other draws.
    """
    if seed is None:
        return DinoViT(embed_dim, depth, num_heads, patch_size, img_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DinoViT(embed_dim, depth, num_heads, patch_size, img_size)


def tiny_dino_vit(seed: int = 0) -> DinoViT:
    """Seeded random ViT (embed 32, depth 2, heads 4, patch 8, 224 px: 785 tokens as B/8) for tests; eval mode."""
    return build_dino_vit(**TINY, seed=seed).eval().requires_grad_(False)


def load_dino_vit(
    path: str | Path, *, embed_dim: int = 768, depth: int = 12, num_heads: int = 12, patch_size: int = 8,
    img_size: int = 224,
) -> DinoViT:
    """Load a DINO backbone state dict (a plain ``{name: tensor}`` file, as DINO publishes it) with ``strict=True``.

    The model is built on the meta device and the file's tensors assigned, so no 85 M random parameters are drawn
    only to be overwritten. Missing file → :class:`DinoWeightsMissingError` (one line, with the download address).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DinoWeightsMissingError(
            f"DINO weights not found at {path}; download {DINO_URL} on a machine with network and copy it there "
            f"(or set edit_metrics.dino.path)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        # DINO's *_full_checkpoint.pth files nest the weights under "teacher"/"student"; only the backbone file loads.
        training = isinstance(state, Mapping) and bool({"teacher", "student"} & set(state))
        hint = f" (this looks like a DINO training checkpoint; use {DINO_FILE})" if training else ""
        raise ValueError(f"{path}: expected a plain state dict of tensors{hint}")
    with torch.device("meta"):
        model = DinoViT(embed_dim, depth, num_heads, patch_size, img_size)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match a DINO ViT (embed {embed_dim}, depth {depth}): missing {missing[:5]}"
            f"{' …' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}"
        )
    model.load_state_dict(state, strict=True, assign=True)  # shape mismatches raise here
    return model.float().eval().requires_grad_(False)


def load_dino_vitb8(path: str | Path) -> DinoViT:
    """DINO ViT-B/8 (``dino_vitbase8_pretrain.pth``: embed 768, depth 12, heads 12, patch 8) from a local file."""
    return load_dino_vit(path, **VITB8)


# --------------------------------------------------------------------------------------------------------------------
# The metric
# --------------------------------------------------------------------------------------------------------------------


def dino_input(
    image_u8: np.ndarray | Tensor, *, unit_range: bool = False, antialias: bool = False,
    device: str | torch.device = "cpu",
) -> Tensor:
    """uint8 (H, W, 3) → the ViT's input (1, 3, h, w): float, resize(224, max_size=480), ImageNet normalisation.

    ``unit_range=False`` is the reference quirk: values stay in [0, 255] through resize and normalisation.
    """
    import torchvision.transforms.functional as TF  # torchvision is only needed here (and by lpips)

    t = torch.as_tensor(np.array(image_u8)) if isinstance(image_u8, np.ndarray) else image_u8
    if t.dtype != torch.uint8 or t.ndim != 3 or t.shape[-1] != 3:
        raise ValueError(f"dino_input expects a uint8 (H, W, 3) image, got {t.dtype} {tuple(t.shape)}")
    x = t.to(device).permute(2, 0, 1).unsqueeze(0).float()
    if unit_range:
        x = x / 255.0
    x = TF.resize(x, [RESIZE_SHORT], interpolation=TF.InterpolationMode.BILINEAR, max_size=RESIZE_MAX,
                  antialias=antialias)
    return TF.normalize(x, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))


def self_similarity(keys: Tensor) -> Tensor:
    """Cosine self-similarity (N, N) of N feature vectors (N, D); the norm product is clamped at 1e-8."""
    norms = keys.norm(dim=-1, keepdim=True)
    return (keys @ keys.T) / (norms @ norms.T).clamp(min=COSINE_EPS)


class StructureDistance:
    """The DINO self-similarity distance between two uint8 images, with the reference's input handling or not."""

    def __init__(
        self, model: DinoViT, *, unit_range: bool = False, antialias: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.unit_range = unit_range
        self.antialias = antialias

    @torch.no_grad()
    def keys(self, image_u8: np.ndarray | Tensor) -> Tensor:
        """Last-block keys (tokens, D) of one uint8 (H, W, 3) image."""
        x = dino_input(image_u8, unit_range=self.unit_range, antialias=self.antialias, device=self.device)
        return self.model.last_block_keys(x)[0]

    @torch.no_grad()
    def __call__(self, source_u8: np.ndarray | Tensor, edit_u8: np.ndarray | Tensor) -> float:
        """``mse(selfsim(keys(edit)), selfsim(keys(source)))``; 0 for identical images."""
        sim_src = self_similarity(self.keys(source_u8))
        sim_edit = self_similarity(self.keys(edit_u8))
        return float(F.mse_loss(sim_edit, sim_src))

    def describe(self) -> dict[str, Any]:
        """How the distance is computed, for the run manifest."""
        return {
            "impl": "easyinv.editing.dino (own ViT in DINO's checkpoint layout)",
            "arch": dict(self.model.arch),
            "input": "uint8 / 255 → [0, 1]" if self.unit_range else "uint8 as float in [0, 255] (reference quirk)",
            "resize": {"short_side": RESIZE_SHORT, "max_size": RESIZE_MAX, "interpolation": "bilinear",
                       "antialias": self.antialias},
            "normalize": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
            "feature": "keys of the last block (middle third of qkv on norm1), all tokens, heads concatenated",
            "distance": "F.mse_loss of cosine self-similarity matrices (norm product clamped at 1e-8)",
            "pos_embed_interpolation": "bicubic, only when the token grid differs from "
                                       f"{self.model.grid}x{self.model.grid}",
        }

