"""Paired statistics against independent computations: a known +0.5 dB shift, no effect over seeded repetitions,
Holm's correction by hand, images missing on one side left out and counted, infinite PSNRs, Table 2's precisions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from easyinv.report import markdown_table, table1, table2
from easyinv.report.paired import PairedSettings, holm, paired_difference, paired_stats
from easyinv.run.records import Record

FAST = PairedSettings(bootstrap=2000)


def _records(psnr: dict[str, np.ndarray], precision: str = "fp32", skip: dict[str, set[int]] | None = None,
             nonfinite: dict[str, set[int]] | None = None) -> list[dict]:
    rows = []
    for method, values in psnr.items():
        for i, value in enumerate(values):
            if i in (skip or {}).get(method, set()):
                continue
            failed = i in (nonfinite or {}).get(method, set())
            rows.append(Record(
                item_id=f"val2017/{i:04d}.jpg", method=method, method_label=method, dataset="coco", model="sd14",
                precision=precision, config_hash=f"{method}-{precision}", device="cpu",
                status="nonfinite" if failed else "ok", reason="NaN latent" if failed else None,
                psnr=None if failed else float(value), ssim=None if failed else 0.5 + value / 100,
                lpips=None if failed else 0.5 - value / 100, latent_mse=None if failed else 1 / value, nfe=100,
                t_total=1.0, t_invert=0.4, t_reconstruct=0.4, unet_seconds=0.5, warmup=i == 0,
                lpips_comparable=True).to_dict())
    return rows


def _shifted(seed: int, shift: float, n: int = 100, noise: float = 0.1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.normal(30.0, 3.0, n)  # images differ a lot; the pairs differ by shift + small noise
    return {"ddim": base, "easyinv": base + shift + rng.normal(0.0, noise, n)}


def test_a_half_db_shift_is_found_with_the_right_ci_p_and_win_rate():
    values = _shifted(seed=1, shift=0.5)
    table = table1(pd.DataFrame(_records(values)), paired=FAST).set_index("label")
    row = table.loc["easyinv"]
    diff = values["easyinv"] - values["ddim"]
    # independent: numpy mean, scipy's Wilcoxon directly, a bootstrap written here with its own generator
    assert row["pair_psnr_delta"] == pytest.approx(diff.mean(), abs=1e-12)
    assert row["pair_psnr_p"] == pytest.approx(stats.wilcoxon(diff).pvalue, rel=1e-12)
    rng = np.random.default_rng(12345)
    means = np.array([diff[rng.integers(0, diff.size, diff.size)].mean() for _ in range(4000)])
    lo, hi = np.quantile(means, [0.025, 0.975])
    assert row["pair_psnr_lo"] == pytest.approx(lo, abs=0.006) and row["pair_psnr_hi"] == pytest.approx(hi, abs=0.006)
    assert row["pair_psnr_lo"] < 0.5 < row["pair_psnr_hi"]
    assert row["pair_psnr_p"] < 1e-6 and row["pair_psnr_significant"] == 1
    assert row["pair_psnr_win"] == pytest.approx(1.0, abs=0.01) and row["pair_psnr_n"] == 100
    assert row["pair_lpips_win"] == pytest.approx(1.0, abs=0.01)  # lower is better: a lower LPIPS wins
    assert row["pair_baseline"] == "ddim" and math.isnan(table.loc["ddim", "pair_psnr_delta"])
    assert row["psnr_mean"] == pytest.approx(values["easyinv"].mean())  # the unpaired columns are unchanged


def test_no_effect_ci_covers_zero_and_p_above_005_in_nine_of_ten_repetitions():
    covered = large_p = 0
    repetitions = 40
    for seed in range(repetitions):
        values = _shifted(seed=100 + seed, shift=0.0, noise=0.5)
        result = paired_stats(values["easyinv"] - values["ddim"], lower_is_better=False, settings=FAST)
        covered += result["lo"] <= 0.0 <= result["hi"]
        large_p += result["p"] > 0.05
    assert covered >= 0.9 * repetitions and large_p >= 0.9 * repetitions


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm([math.nan, 0.01, 0.04])  # NaN does not count: m = 2
    assert math.isnan(adjusted[0]) and adjusted[1:] == pytest.approx([0.02, 0.04])
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_images_missing_on_either_side_are_left_out_and_counted():
    values = _shifted(seed=2, shift=0.5)
    df = pd.DataFrame(_records(values, skip={"easyinv": {3, 4}, "ddim": {7}}, nonfinite={"easyinv": {9}}))
    table = table1(df, paired=FAST)
    row = table.set_index("label").loc["easyinv"]
    kept = [i for i in range(100) if i not in (3, 4, 7, 9)]
    diff = values["easyinv"][kept] - values["ddim"][kept]
    assert row["pair_psnr_n"] == 96 and row["pair_psnr_left_out"] == 4
    assert row["pair_psnr_delta"] == pytest.approx(diff.mean(), abs=1e-12)
    assert "| 96 (4 left out) |" in markdown_table(table)
    a = pd.Series([1.0, 2.0, math.nan], index=["x", "y", "z"])
    b = pd.Series([0.5, 4.0], index=["y", "w"])
    diff, left_out = paired_difference(a, b)
    assert diff.tolist() == [1.5] and left_out == 2  # y paired; x (only a), w (only b) left out; z has no value


def test_infinite_psnr_pairs_keep_an_order_for_the_test():
    diff, _ = paired_difference(pd.Series([math.inf, math.inf, 40.0]), pd.Series([math.inf, 30.0, 35.0]))
    assert diff.tolist() == [0.0, math.inf, 5.0]  # ∞ − ∞ of two identical reconstructions is no difference
    result = paired_stats(np.array([math.inf] * 8 + [1.0, 2.0]), lower_is_better=False, settings=FAST)
    assert result["delta"] == math.inf and math.isnan(result["lo"]) and result["win"] == 1.0
    assert result["p"] == pytest.approx(stats.wilcoxon(np.arange(1.0, 11.0)).pvalue)  # only the order counts


def test_baseline_none_adds_no_columns_and_table2_pairs_precisions():
    values = _shifted(seed=3, shift=0.0)
    df = pd.DataFrame(_records(values) + _records({k: v - 0.2 for k, v in values.items()}, precision="fp16"))
    assert not any(c.startswith("pair_") for c in table1(df, paired=PairedSettings(baseline=None)).columns)
    assert not any(c.startswith("pair_") for c in table1(df).columns)  # nothing asked: the old table
    t2 = table2(df, paired=FAST).set_index(["label", "precision"])
    assert t2.loc[("easyinv", "fp16"), "pair_psnr_delta"] == pytest.approx(-0.2)
    assert t2.loc[("easyinv", "fp16"), "pair_baseline"] == "fp32"
    assert math.isnan(t2.loc[("easyinv", "fp32"), "pair_psnr_delta"])
    assert "Δ PSNR vs fp32" in markdown_table(t2.reset_index(), "table2")


def test_a_missing_identity_value_does_not_compare_the_baseline_with_itself():
    values = _shifted(seed=4, shift=0.5)
    df = pd.DataFrame(_records(values)).assign(device=None)  # an old record without a device
    table = table1(df, paired=FAST).set_index("label")
    assert math.isnan(table.loc["ddim", "pair_psnr_delta"]) and pd.isna(table.loc["ddim", "pair_baseline"])
    assert table.loc["easyinv", "pair_psnr_delta"] == pytest.approx((values["easyinv"] - values["ddim"]).mean())


def test_sweep_rows_are_paired_with_the_baseline_configuration():
    from easyinv.report.sweep_tables import sweep_markdown, sweep_table

    rng = np.random.default_rng(5)
    base = rng.normal(30.0, 3.0, 50)
    rows = _records({"ddim": base})
    for eta, shift in ((0.3, 0.5), (0.5, 1.0)):
        swept = _records({"easyinv": base + shift})
        rows += [{**r, "config_hash": f"easyinv-{eta}", "method.eta": eta} for r in swept]
    table = sweep_table(pd.DataFrame(rows), ["method.eta"], paired=FAST)
    by_eta = table[table["method"] == "easyinv"].set_index("method.eta")
    assert by_eta.loc[0.3, "pair_psnr_delta"] == pytest.approx(0.5)
    assert by_eta.loc[0.5, "pair_psnr_delta"] == pytest.approx(1.0)
    assert (by_eta["pair_baseline"] == "ddim").all() and (by_eta["pair_psnr_n"] == 50).all()
    assert "Δ PSNR vs ddim" in sweep_markdown(table)
