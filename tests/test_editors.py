"""Editors as attention processors (editing.md §6.4(3), (4), (5)): P2P mechanics on planted tensors, MasaCtrl's
layer map, the processor plumbing, and row invariants on a tiny UNet with SD-1.x's block types."""

from __future__ import annotations

import pytest
import torch

from easyinv.editing.attention import EditAttnProcessor, EditController, LayerInfo, attention_layers, install
from easyinv.editing.layout import RowLayout
from easyinv.editing.masactrl import MasaCtrlController, MasaCtrlEditor
from easyinv.editing.p2p import (
    P2PController,
    P2PEditor,
    cross_window,
    equalizer,
    refine_mapper,
    replace_mapper,
    self_window,
    word_token_indices,
)

SRC, TGT = "a photo of the cat", "a photo of the tiger"
# tiny tokenizer: BOS, a, p h o t o, o f, the, cat, EOS -> "the" = 9, "cat" = 10; "tiger" = t i g e r = 10..14
CAT, TIGER = [10], [10, 11, 12, 13, 14]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from transformers import CLIPTokenizer

    from easyinv.models.tiny import write_clip_tokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    write_clip_tokenizer(folder)
    return CLIPTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def sd_unet():
    """A tiny UNet with SD-1.x's block types: 16 transformer blocks; 8x8 latents run at 8/4/2/1 (SD: 64/32/16/8)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(block_out_channels=(32, 64, 64, 64), layers_per_block=2,
                                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=32, sample_size=8).eval()


def _layer(name: str, kind: str = "cross", block: str | None = None, index: int = 0) -> LayerInfo:
    return LayerInfo(name=name, kind=kind, block=block or name.split("_")[0], index=index)


def _probs(rows: int, heads: int, queries: int, keys: int = 77, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, heads, queries, keys, generator=g).softmax(-1)


# -- P2P: pure helpers -------------------------------------------------------------------------------------------------


def test_windows_at_50_steps():
    table = cross_window(50, 0.4)
    assert table.shape == (51,)
    assert table.nonzero().flatten().tolist() == list(range(20))  # int(0.4 * 51) = 20
    assert self_window(50, 0.6) == range(0, 30)  # int(50 * 0.6) = 30
    assert cross_window(50, (0.2, 0.4)).nonzero().flatten().tolist() == list(range(10, 20))


def test_word_token_indices_split_on_spaces(tokenizer):
    assert word_token_indices(SRC, "cat", tokenizer) == CAT
    assert word_token_indices(SRC, "photo", tokenizer) == [2, 3, 4, 5, 6]
    assert word_token_indices(TGT, "tiger", tokenizer) == TIGER
    assert word_token_indices("a cat and a cat", "cat", tokenizer) == [2, 6]  # every occurrence
    assert word_token_indices("the cat, sitting", "cat", tokenizer) == []  # "cat," is not "cat" (upstream quirk)
    assert word_token_indices("the cat, sitting", "cat,", tokenizer) == [2, 3]
    assert word_token_indices(SRC, 4, tokenizer) == CAT  # by word position


def test_refine_mapper_inserted_and_substituted_words(tokenizer):
    mapper, alpha = refine_mapper(SRC, "a photo of the big cat", tokenizer)
    # target: BOS a p h o t o o f the | b i g | cat EOS ; the inserted "big" (10..12) has no source token
    assert mapper.shape == alpha.shape == (77,)
    assert alpha[:16].tolist() == [1.0] * 10 + [0.0] * 3 + [1.0] * 3
    assert mapper[:10].tolist() == list(range(10))
    assert mapper[13:15].tolist() == [10, 11]  # cat and EOS map back to their source positions
    assert mapper[15:].tolist() == list(range(15, 77)) and bool((alpha[15:] == 1).all())

    mapper, alpha = refine_mapper(SRC, "a photo of the dog", tokenizer)  # a mismatch costs more than two gaps
    assert alpha[10] == 0 and alpha[:10].eq(1).all() and alpha[11:].eq(1).all()
    assert mapper[11] == 11  # EOS

    mapper, alpha = refine_mapper(SRC, SRC, tokenizer)
    assert mapper.tolist() == list(range(77)) and bool((alpha == 1).all())


def test_replace_mapper(tokenizer):
    same = replace_mapper(SRC, "a photo of the dog", tokenizer)  # one token each: one-to-one on the diagonal
    assert torch.equal(same, torch.eye(77))
    spread = replace_mapper("a cat", "a tiger", tokenizer)  # 1 source token -> 5 target tokens
    assert spread[0, 0] == spread[1, 1] == 1
    assert torch.allclose(spread[2, 2:7], torch.full((5,), 0.2)) and spread[2].sum() == pytest.approx(1.0)
    assert spread[3, 7] == 1 and spread[4, 8] == 1  # after the word, source i keeps following target j
    with pytest.raises(ValueError, match="5 and the target 6"):
        replace_mapper(SRC, "a photo of the big cat", tokenizer)


def _upstream_replacement_mapper(x: str, y: str, tokenizer, max_len: int = 77) -> torch.Tensor:
    """prompt-to-prompt's ``seq_aligner.get_replacement_mapper_``, transcribed with its index slip: once the last
    replaced word is passed it writes ``mapper[j, j]`` where the alignment is ``mapper[i, j]``."""
    words_x, words_y = x.split(" "), y.split(" ")
    replaced = [k for k in range(len(words_y)) if words_y[k] != words_x[k]]
    src = [word_token_indices(x, k, tokenizer) for k in replaced]
    tgt = [word_token_indices(y, k, tokenizer) for k in replaced]
    mapper = torch.zeros(max_len, max_len)
    i = j = cur = 0
    while i < max_len and j < max_len:
        if cur < len(src) and src[cur][0] == i:
            if len(src[cur]) == len(tgt[cur]):
                mapper[src[cur], tgt[cur]] = 1
            else:
                for col in tgt[cur]:
                    mapper[src[cur], col] = 1 / len(tgt[cur])
            i, j, cur = i + len(src[cur]), j + len(tgt[cur]), cur + 1
        elif cur < len(src):
            mapper[i, j] = 1
            i, j = i + 1, j + 1
        else:
            mapper[j, j] = 1
            i, j = i + 1, j + 1
    return mapper


def test_replace_mapper_keeps_the_alignment_where_upstream_slips(tokenizer):
    """Equal to prompt-to-prompt's mapper wherever every replaced word keeps its token count; after a multi-token
    replacement upstream maps source token j (not i) to target token j, e.g. "on" to a piece of the next word. Ours
    keeps source i → target j, and docs/editing.md says so and why (PIE-Bench's runs use refine, which agrees
    exactly)."""
    from pathlib import Path

    same = ("a photo of the cat on a mat", "a photo of the dog on a mat")
    assert torch.equal(replace_mapper(*same, tokenizer), _upstream_replacement_mapper(*same, tokenizer))
    src, tgt = "a cat on a mat", "a tiger on a mat"  # cat: 1 token, tiger: 5
    ours, upstream = replace_mapper(src, tgt, tokenizer), _upstream_replacement_mapper(src, tgt, tokenizer)
    on = word_token_indices(src, "on", tokenizer)[0]
    on_target = word_token_indices(tgt, "on", tokenizer)[0]
    assert on_target == on + 4
    assert ours[on, on_target] == 1 and ours[on].sum() == 1  # "on" attends where "on" is in the target
    assert upstream[on, on_target] == 0 and upstream[on_target, on_target] == 1  # upstream: row j, not row i
    assert torch.equal(ours[: on], upstream[: on])  # the two agree up to the end of the replaced word
    page = (Path(__file__).resolve().parents[1] / "docs" / "editing.md").read_text(encoding="utf-8")
    assert "get_replacement_mapper" in page and "index slip" in page


def test_replace_mode_controller_applies_the_matrix(tokenizer):
    ctrl = P2PController(["a cat"], ["a tiger"], None, tokenizer, 10, mode="replace")
    ctrl.begin(RowLayout(1))
    probs = _probs(4, 2, 4)
    expected = torch.einsum("hqw,wn->hqn", probs[2], replace_mapper("a cat", "a tiger", tokenizer))
    out = ctrl.edit_probs(_layer("up_blocks.1.x.attn2.processor"), probs.clone())
    assert torch.allclose(out[3], expected) and torch.equal(out[:3], probs[:3])


# -- P2P: the controller on planted probabilities ----------------------------------------------------------------------


def test_self_replacement_only_at_small_layers_and_in_window(tokenizer):
    ctrl = P2PController([SRC], [TGT], None, tokenizer, 50, self_replace_max_tokens=16)
    attn1 = _layer("up_blocks.2.attentions.0.transformer_blocks.0.attn1.processor", kind="self")
    attn2 = _layer("up_blocks.2.attentions.0.transformer_blocks.0.attn2.processor")
    assert ctrl.explicit(attn1, 16) and not ctrl.explicit(attn1, 64) and ctrl.explicit(attn2, 64)
    ctrl.begin(RowLayout(1))  # rows: 0 uncond src, 1 uncond tgt, 2 cond src, 3 cond tgt
    for step, queries, replaced in ((0, 16, True), (29, 16, True), (30, 16, False), (0, 64, False)):
        ctrl.step = step
        probs = _probs(4, 2, queries, queries, seed=step)
        out = ctrl.edit_probs(attn1, probs.clone())
        assert torch.equal(out[:3], probs[:3])  # sources and the unconditional target untouched
        assert torch.equal(out[3], probs[2] if replaced else probs[3]), (step, queries)
    ctrl.active = False
    probs = _probs(4, 2, 16, 16)
    ctrl.step = 0
    assert torch.equal(ctrl.edit_probs(attn1, probs.clone()), probs)


def test_refine_and_reweight_inside_the_cross_window_only(tokenizer):
    eq = equalizer(TGT, "tiger", 2.0, tokenizer)
    assert (eq == 2).nonzero().flatten().tolist() == TIGER and int((eq == 1).sum()) == 77 - len(TIGER)

    ctrl = P2PController([SRC], [TGT], [("cat", "tiger")], tokenizer, 50, local_blend=False)
    layer = _layer("down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor")
    ctrl.begin(RowLayout(1))
    mapper, alpha = refine_mapper(SRC, TGT, tokenizer)
    assert alpha[TIGER].eq(0).all() and alpha[[0, 9, 15, 16]].eq(1).all() and mapper[15] == 11  # EOS -> EOS
    probs = _probs(4, 2, 64)
    src, tgt = probs[2], probs[3]
    ctrl.step = 19
    out = ctrl.edit_probs(layer, probs.clone())
    assert torch.equal(out[:3], probs[:3])
    assert torch.allclose(out[3][..., TIGER], 2 * tgt[..., TIGER])  # new word: own attention x 2
    assert torch.allclose(out[3][..., :10], src[..., :10])  # aligned words: the source's attention
    assert torch.allclose(out[3][..., 15], src[..., 11])  # target EOS reads the source EOS
    assert torch.equal(out[3][..., 16:], src[..., 16:])  # padding positions map to themselves
    ctrl.step = 20  # outside the window: the target keeps its own attention, no reweight
    out = ctrl.edit_probs(layer, probs.clone())
    assert torch.equal(out, probs)


def test_local_blend_store_holds_the_edited_target_maps(tokenizer):
    """Upstream edits the stored probability tensor in place, so LocalBlend reads the *edited* target maps."""
    ctrl = P2PController([SRC], [TGT], [("cat", "tiger")], tokenizer, 50)
    ctrl.begin(RowLayout(1))
    layer = _layer("up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor")
    probs = _probs(4, 2, 16)
    for step in (0, 20):  # inside the window (tiger x 2), then outside (own maps)
        ctrl.step = step
        ctrl.edit_probs(layer, probs.clone())
    tiger = probs[3][..., TIGER].sum(-1)
    stored = ctrl._store[layer.name][0]  # (2: source, target; heads; queries), summed over the two steps
    assert torch.allclose(stored[0], 2 * probs[2][..., CAT].sum(-1))
    assert torch.allclose(stored[1], 2 * tiger + tiger)


def _plant(rows: int, heads: int, side: int, token_maps: dict[tuple[int, int], torch.Tensor]) -> torch.Tensor:
    """Cross-attention probs whose (row, token) entries carry a planted spatial map; the rest spreads uniformly."""
    probs = torch.full((rows, heads, side * side, 77), 1e-3)
    for (row, token), spatial in token_maps.items():
        probs[row, :, :, token] = spatial.flatten()
    return probs


def test_local_blend_with_planted_maps(tokenizer):
    # two images: image 0 blends cat -> tiger, image 1 has no blend words (no LocalBlend, untouched latents)
    ctrl = P2PController([SRC, SRC], [TGT, TGT], [("cat", "tiger"), None], tokenizer, 10, cross_replace=0.0,
                         reweight=None)
    layout = RowLayout(2)  # rows: 0-1 uncond src, 2-3 uncond tgt, 4-5 cond src, 6-7 cond tgt
    ctrl.begin(layout)
    src_map, tgt_map = torch.zeros(4, 4), torch.zeros(4, 4)
    src_map[0, 0], src_map[3, 0] = 1.0, 0.25  # the weak spot falls under the 0.3 threshold after normalisation
    tgt_map[3, 3], tgt_map[0, 3] = 1.0, 0.4  # this one stays above it
    planted = {(4, CAT[0]): src_map, **{(6, t): tgt_map / len(TIGER) for t in TIGER}}
    noise = {(row, t): torch.rand(4, 4) for row in (0, 2, 5, 7) for t in range(1, 16)}  # rows LocalBlend ignores
    blend_layers = [_layer("down_blocks.2.attentions.0.transformer_blocks.0.attn2.processor"),
                    _layer("up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor")]
    for step in range(3):  # maps accumulate over steps; LocalBlend acts from step int(0.2 * 10) = 2 on
        ctrl.step = step
        for layer in blend_layers:
            ctrl.edit_probs(layer, _plant(8, 2, 4, {**noise, **planted}))
        # a mid-block layer and another resolution are never read, whatever they hold
        ctrl.edit_probs(_layer("mid_block.attentions.0.transformer_blocks.0.attn2.processor", block="mid"),
                        _plant(8, 2, 4, {(4, CAT[0]): torch.ones(4, 4)}))
        ctrl.edit_probs(_layer("up_blocks.2.attentions.0.transformer_blocks.0.attn2.processor"),
                        _plant(8, 2, 8, {(4, CAT[0]): torch.ones(8, 8)}))
        ctrl.edit_probs(_layer("up_blocks.2.attentions.0.transformer_blocks.0.attn1.processor", kind="self"),
                        torch.rand(8, 2, 16, 16).softmax(-1))
        z_src, z_tgt = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
        out = ctrl.after_step(z_src, z_tgt)
        if step < 2:
            assert torch.equal(out, z_tgt)
    # by hand: 3x3 max-pool on the 4x4 maps, nearest x4 to 16x16, / max, > 0.3, source OR target
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[0:8, 0:8] = True  # source peak (0, 0) pooled over map rows/cols 0-1
    expected[8:16, 8:16] = True  # target peak (3, 3)
    expected[0:8, 8:16] = True  # target 0.4 at (0, 3)
    assert torch.equal(ctrl.blend_mask((16, 16))[0, 0], expected)
    m = expected.float()
    assert torch.allclose(out[0], z_src[0] + m * (z_tgt[0] - z_src[0]))
    assert torch.equal(out[1], z_tgt[1])


def test_missing_blend_word_is_reported_and_erases_the_edit(tokenizer, caplog):
    src, tgt = "a photo of the cat,", "a photo of the tiger."
    with caplog.at_level("WARNING"):
        ctrl = P2PController([src, SRC], [tgt, TGT], [("cat", "tiger"), ("cat", "tiger")], tokenizer, 10,
                             cross_replace=0.0)
    report = ctrl.report()
    assert report[0]["missing"] == [{"prompt": "source", "word": "cat"}, {"prompt": "target", "word": "tiger"}]
    assert (report[0]["source_word_found"], report[0]["target_word_found"]) == (False, False)
    assert report[1]["missing"] == [] and report[1]["local_blend"] and report[1]["reweight"] == 2.0
    assert (report[1]["source_word_found"], report[1]["target_word_found"]) == (True, True)
    assert "not found" in caplog.text
    assert torch.equal(ctrl.equalizer[0], torch.ones(77))  # nothing to reweight either
    ctrl.begin(RowLayout(2))
    ctrl.step = 5
    spot = torch.zeros(2, 2)
    spot[0, 0] = 1.0
    ctrl.edit_probs(_layer("up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor"),
                    _plant(8, 2, 2, {(5, CAT[0]): spot, **{(7, t): spot for t in TIGER}}))
    z_src, z_tgt = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    out = ctrl.after_step(z_src, z_tgt)
    assert torch.equal(out[0], z_src[0])  # 0/0 -> NaN -> empty mask: the target is overwritten by the source
    assert not torch.equal(out[1], z_src[1])


# -- layer map and processor plumbing ----------------------------------------------------------------------------------


def _execution_order(unet, sample: torch.Tensor, context: torch.Tensor) -> list[str]:
    order: list[str] = []
    handles = [module.register_forward_pre_hook(lambda m, a, name=name: order.append(f"{name}.processor"))
               for name, module in unet.named_modules() if hasattr(module, "set_processor")]
    try:
        with torch.no_grad():
            unet(sample, 10, context)
    finally:
        for handle in handles:
            handle.remove()
    return order


def test_layer_map_in_execution_order(sd_unet):
    layers = attention_layers(sd_unet)
    assert len(layers) == len(sd_unet.attn_processors) == 32
    assert [layer.name for layer in layers] == _execution_order(sd_unet, torch.randn(1, 4, 8, 8),
                                                                torch.randn(1, 77, 32))
    assert [layer.name for layer in layers] != list(sd_unet.attn_processors)  # diffusers lists mid last
    blocks = {layer.index: layer for layer in layers if layer.kind == "self"}
    assert sorted(blocks) == list(range(16))
    assert [k for k, layer in blocks.items() if layer.block == "mid"] == [6]
    assert [k for k, layer in blocks.items() if layer.name.startswith("up_blocks.1.")] == [7, 8, 9]
    assert all(layer.kind == ("self" if ".attn1." in layer.name else "cross") for layer in layers)


def test_layer_map_sdxl_shape():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)  # tiny-sdxl's UNet: two transformer layers per block in the second level
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=2, sample_size=8,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=32,
                                cross_attention_dim=32, attention_head_dim=(2, 4), transformer_layers_per_block=(1, 2))
    layers = attention_layers(unet)
    assert [layer.name for layer in layers] == _execution_order(unet, torch.randn(1, 4, 8, 8), torch.randn(1, 7, 32))
    assert max(layer.index for layer in layers) + 1 == 2 * 2 + 2 + 3 * 2  # down 2x2, mid 2, up 3x2


def test_masactrl_layers(sd_unet):
    layers = attention_layers(sd_unet)
    default = MasaCtrlController(50)
    default.setup(layers)
    chosen = [layer for layer in layers if default.selected(layer)]
    assert {layer.index for layer in chosen} == set(range(10, 16)) and all(lay.kind == "self" for lay in chosen)
    assert all(layer.name.startswith(("up_blocks.2.", "up_blocks.3.")) for layer in chosen)
    named = MasaCtrlController(50, layers=["up_blocks.1"])
    named.setup(layers)
    assert {layer.index for layer in layers if named.selected(layer)} == {7, 8, 9}
    with pytest.raises(ValueError, match="16 transformer blocks"):
        MasaCtrlController(50, start_layer=16).setup(layers)
    with pytest.raises(ValueError, match="no self-attention module under 'up_blocks.9'"):
        MasaCtrlController(50, layers=["up_blocks.9"]).setup(layers)
    tiny_sd_like = [_layer(f"down_blocks.1.attentions.{k}.t.attn1.processor", "self", "down", k) for k in range(6)]
    with pytest.raises(ValueError, match="6 transformer blocks"):
        MasaCtrlController(50).setup(tiny_sd_like)  # tiny-sd: 6 blocks, start_layer must be set explicitly


def test_masactrl_swaps_self_attention_kv_only():
    ctrl = MasaCtrlController(50, start_step=4, start_layer=1)
    ctrl.begin(RowLayout(2))
    key, value = torch.randn(8, 5, 16), torch.randn(8, 5, 16)
    self_layer = _layer("up_blocks.1.a.attn1.processor", kind="self", index=1)
    ctrl.step = 4
    k, v = ctrl.edit_kv(self_layer, key, value)
    source_of = [0, 1, 0, 1, 4, 5, 4, 5]  # uncond targets read uncond sources, cond targets cond sources
    assert torch.equal(k, key[source_of]) and torch.equal(v, value[source_of])
    for layer, step in ((self_layer, 3), (_layer("up_blocks.1.a.attn2.processor", index=1), 4),
                        (_layer("down_blocks.0.a.attn1.processor", kind="self", index=0), 4)):
        ctrl.step = step
        assert ctrl.edit_kv(layer, key, value)[0] is key


class _Explicit(EditController):
    def explicit(self, layer: LayerInfo, n_queries: int) -> bool:
        return True


@pytest.mark.parametrize("variant", ["cross+mask", "4d+group_norm+residual"])
def test_processor_matches_diffusers_on_module_variants(variant):
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

    torch.manual_seed(0)
    if variant == "cross+mask":
        attn = Attention(query_dim=32, cross_attention_dim=16, heads=4, dim_head=8)
        context = torch.randn(2, 7, 16)
        mask = torch.zeros(2, 1, 7)
        mask[1, :, 5:] = -10000.0  # the UNet's additive form of an encoder attention mask
        args, kwargs = (torch.randn(2, 10, 32),), {"encoder_hidden_states": context, "attention_mask": mask}
    else:
        attn = Attention(query_dim=32, heads=4, dim_head=8, norm_num_groups=8, residual_connection=True,
                         rescale_output_factor=2.0, bias=True)
        args, kwargs = (torch.randn(2, 32, 4, 4),), {}
    layer = LayerInfo("mid_block.attentions.0.processor", "cross" if variant == "cross+mask" else "self", "mid", 0)
    with torch.no_grad():
        for ctrl, reference in ((EditController(1), AttnProcessor2_0()), (_Explicit(1), AttnProcessor())):
            attn.set_processor(reference)
            expected = attn(*args, **kwargs)
            attn.set_processor(EditAttnProcessor(layer, ctrl))
            assert torch.allclose(attn(*args, **kwargs), expected, atol=1e-6, rtol=0), type(ctrl).__name__


def test_install_covers_all_modules_and_restores(sd_unet):
    before = sd_unet.attn_processors
    ctrl = EditController(5)
    with install(sd_unet, ctrl) as layers:
        inside = sd_unet.attn_processors
        assert len(inside) == len(before) == len(layers)
        assert all(isinstance(p, EditAttnProcessor) and p.controller is ctrl for p in inside.values())
        assert all(inside[layer.name].layer == layer for layer in layers)
    assert all(sd_unet.attn_processors[name] is proc for name, proc in before.items())
    with pytest.raises(RuntimeError, match="boom"), install(sd_unet, ctrl):
        raise RuntimeError("boom")
    assert all(sd_unet.attn_processors[name] is proc for name, proc in before.items())


# -- invariants on the tiny SD-shaped UNet -----------------------------------------------------------------------------


def _context(images: int, identical: bool, seed: int = 1) -> torch.Tensor:
    """Text embeddings of the 4B rows: uncond "" twice, then per image a source and a target prompt."""
    g = torch.Generator().manual_seed(seed)
    empty = torch.randn(1, 77, 32, generator=g).expand(images, -1, -1)
    src = torch.randn(images, 77, 32, generator=g)
    tgt = src if identical else torch.randn(images, 77, 32, generator=g)
    return torch.cat([empty, empty, src, tgt])


def _p2p(tokenizer, steps: int, same: bool = False, **kwargs) -> P2PController:
    """P2P for two images with blend words and the tiny UNet's 4x4 layers as the "≤ 32²" self-replacement limit."""
    sources = [SRC, "a photo of the dog"]
    targets, words = (sources, [("cat", "cat"), ("dog", "dog")]) if same else \
        ([TGT, TGT], [("cat", "tiger"), ("dog", "tiger")])
    return P2PController(sources, targets, words, tokenizer, steps, **{"self_replace_max_tokens": 16, **kwargs})


def test_passive_controller_matches_diffusers_processors(sd_unet, tokenizer):
    """No edit ⇒ the UNet output of diffusers' processors: SDPA layers as AttnProcessor2_0 (the default), explicit
    layers as AttnProcessor. (SDPA vs explicit softmax differ in rounding, which this random UNet amplifies to
    ~1e-3, for diffusers' own two processors too; so each kernel is compared with its own counterpart.)"""
    from diffusers.models.attention_processor import AttnProcessor

    layout = RowLayout(2)
    z, ctx = torch.randn(layout.rows, 4, 8, 8, generator=torch.Generator().manual_seed(0)), _context(2, False)
    default = sd_unet.attn_processors
    with torch.no_grad():
        sdpa = sd_unet(z, 500, ctx).sample
        sd_unet.set_attn_processor(AttnProcessor())
        try:
            classic = sd_unet(z, 500, ctx).sample
        finally:
            sd_unet.set_attn_processor(dict(default))
        all_explicit = _p2p(tokenizer, 10, self_replace_max_tokens=10**6)
        for ctrl, reference in ((EditController(10), sdpa), (MasaCtrlController(10, start_step=0, start_layer=0), sdpa),
                                (all_explicit, classic)):
            ctrl.active = False
            ctrl.begin(layout)
            with install(sd_unet, ctrl):
                out = sd_unet(z, 500, ctx).sample
            assert torch.allclose(out, reference, atol=1e-6, rtol=0), type(ctrl).__name__


def _walk(unet, ctrl: EditController, ctx: torch.Tensor, images: int, steps: int) -> tuple[torch.Tensor, ...]:
    """A small CFG loop in the walk's shape: step set before each call, after_step after each update."""
    layout = RowLayout(images)
    ctrl.begin(layout)
    z_src = torch.randn(images, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    z_tgt = z_src.clone()
    eps_all = []
    with torch.no_grad(), install(unet, ctrl):
        for i in range(steps):
            ctrl.step = i
            eps = unet(layout.stack(z_src, z_tgt), 900 - 100 * i, ctx).sample
            eps_all.append(eps)
            e_src, e_tgt = layout.guide(eps, 7.5)
            z_src, z_tgt = z_src - 0.05 * e_src, z_tgt - 0.05 * e_tgt
            z_tgt = ctrl.after_step(z_src, z_tgt)
    return z_src, z_tgt, torch.stack(eps_all)


def test_identical_prompts_leave_target_equal_to_source(sd_unet, tokenizer):
    steps = 6
    ctx = _context(2, identical=True)
    for ctrl in (_p2p(tokenizer, steps, same=True, reweight=None, cross_replace=0.5, self_replace=0.5),
                 MasaCtrlController(steps, start_step=1, start_layer=10)):
        z_src, z_tgt, _ = _walk(sd_unet, ctrl, ctx, 2, steps)
        assert torch.allclose(z_tgt, z_src, atol=1e-6, rtol=0), type(ctrl).__name__
        if isinstance(ctrl, P2PController):  # latent 8 -> 2x2 maps: SD-1.4's down_cross[2:4] + up_cross[:3]
            assert ctrl.blend_layers == [f"{part}.attentions.{k}.transformer_blocks.0.attn2.processor"
                                         for part, n in (("down_blocks.2", 2), ("up_blocks.1", 3)) for k in range(n)]


def test_active_controller_leaves_source_rows_unchanged(sd_unet, tokenizer):
    steps = 6
    ctx = _context(2, identical=False)
    layout = RowLayout(2)
    src_rows = layout.source_rows
    for make in (lambda: _p2p(tokenizer, steps, cross_replace=0.5, self_replace=0.5),
                 lambda: MasaCtrlController(steps, start_step=1, start_layer=10)):
        passive = make()
        passive.active = False
        z_src_p, z_tgt_p, eps_p = _walk(sd_unet, passive, ctx, 2, steps)
        z_src_a, z_tgt_a, eps_a = _walk(sd_unet, make(), ctx, 2, steps)
        assert torch.allclose(eps_a[:, src_rows], eps_p[:, src_rows], atol=1e-6, rtol=0)
        assert torch.allclose(z_src_a, z_src_p, atol=1e-6, rtol=0)
        assert not torch.allclose(z_tgt_a, z_tgt_p, atol=1e-4)  # the edit did act on the target


# -- editors and their configs -----------------------------------------------------------------------------------------


def test_editor_configs_instantiate(tokenizer, tmp_path):
    from helpers import make_cfg
    from hydra.utils import instantiate

    p2p = instantiate(make_cfg(tmp_path, "model=sd14", "edit=p2p").edit)
    assert isinstance(p2p, P2PEditor) and p2p == P2PEditor()
    assert (p2p.name, p2p.source, p2p.mode, p2p.cross_replace, p2p.self_replace, p2p.reweight) == \
        ("p2p", "free", "refine", 0.4, 0.6, 2.0)
    ctrl = p2p.controller([SRC], [TGT], [("cat", "tiger")], tokenizer, 50)
    assert isinstance(ctrl, P2PController) and ctrl.num_steps == 50

    masa = instantiate(make_cfg(tmp_path, "model=sd14", "edit=masactrl").edit)
    assert isinstance(masa, MasaCtrlEditor) and masa == MasaCtrlEditor()
    assert (masa.source_prompt, masa.inversion_prompt, masa.start_step, masa.start_layer) == ("", "", 4, 10)
    named = instantiate(make_cfg(tmp_path, "model=sd14", "edit=masactrl").edit, layers=["up_blocks.2", "up_blocks.3"])
    assert named.layers == ("up_blocks.2", "up_blocks.3")
    assert isinstance(named.controller([""], [TGT], None, tokenizer, 50), MasaCtrlController)
    tiny = make_cfg(tmp_path, "model=tiny-sd", "edit=masactrl").edit  # per-model knobs from model.editing
    assert tiny.start_layer == 3 and make_cfg(tmp_path, "model=tiny-sd", "edit=p2p").edit.blend_map_size == 4

    for editor in (P2PEditor, MasaCtrlEditor):
        assert editor(source="direct_offsets").source == "direct_offsets"
        with pytest.raises(ValueError, match="free"):
            editor(source="offsets")
    with pytest.raises(ValueError, match="mode"):
        P2PEditor(mode="reweight")
