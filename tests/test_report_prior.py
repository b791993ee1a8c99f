"""The report's estimated-prior table (issue 10 §3): protocol and numbers on synthetic saved logits."""
import json

import numpy as np
import pytest

import lade
from lade.app import evaluation, report, report_text
from test_cli import fake_run

COUNTS = np.array([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
LOG_PS = np.log(COUNTS / COUNTS.sum())


def _logits(labels, seed, separation=2.5):
    """A softmax-CE model that learned the training prior: softmax(f) is the source posterior."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(len(labels), 10)) + LOG_PS
    f[np.arange(len(labels)), labels] += separation
    return f.astype(np.float32)


def test_held_out_halves():
    labels = np.array([0, 1, 0, 2, 0, 1, 2, 0, 1, 1, 2], np.int64)
    held, pool = evaluation.held_out_halves(labels, 3)
    np.testing.assert_array_equal(held, [0, 1, 2, 3, 5])  # first floor(n_c / 2) of each class
    np.testing.assert_array_equal(np.sort(np.concatenate([held, pool])), np.arange(len(labels)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("prior")
    labels = np.tile(np.arange(10), 400)  # 400 test images per class, interleaved
    f = _logits(labels, 1)
    fake_run(root / "ce", "softmax_ce", f, labels, COUNTS)
    # LADE's logits give softmax(f + log p_t) at test time
    fake_run(root / "lade", "lade", np.ascontiguousarray(f - LOG_PS, dtype=np.float32), labels, COUNTS)
    return {name: evaluation.evaluate_run(root / name) for name in ("ce", "lade")}, f, labels


def test_estimated_prior_protocol_and_reference_numbers(runs):
    results, f, labels = runs
    e = results["ce"]["estimated_prior"]
    assert e["held_out_images"] == 2000 and e["pool_images"] == 2000
    assert set(e["estimators"]) == set(evaluation.ESTIMATORS)
    held, pool = evaluation.held_out_halves(labels, 10)
    for i, (direction, ratio) in enumerate(lade.sampling.SHIFT_SETTINGS):
        # by hand: the pool (200 per class), spec §2.3 counts with img_max 200, first k per class
        k = np.arange(10)
        n = np.full(10, 200) if direction == "uniform" else (200 * (1.0 / ratio) ** (k / 9)).astype(int)
        n = n[::-1] if direction == "backward" else n
        rows = pool[np.concatenate([np.flatnonzero(labels[pool] == c)[:n[c]] for c in range(10)])]
        p_t = n / n.sum()
        oracle = np.mean(np.argmax(f[rows] - LOG_PS + np.log(p_t), 1) == labels[rows])
        none = np.mean(np.argmax(f[rows] - LOG_PS, 1) == labels[rows])
        assert e["accuracy"]["oracle"][i] == pytest.approx(oracle, abs=1e-9)
        assert e["accuracy"]["none"][i] == pytest.approx(none, abs=1e-9)
    assert e["settings"] == evaluation.SETTING_NAMES
    # then the suite of shifts off the long tail: every target but k20 (10 classes), the oracle and no
    # adjustment of each draw recomputed by hand from lade.sampling.shift_suite on the pool
    suite = e["suite"]
    assert suite["targets"] == [t for t in lade.sampling.SUITE_TARGETS if t != "k20"]
    assert set(suite["estimators"]) == set(evaluation.SUITE_ROWS)
    by_target = {}
    for t in lade.sampling.shift_suite(labels[pool], 10):
        rows = pool[t.indices]
        oracle = np.argmax(f[rows] - LOG_PS + np.log(np.maximum(t.prior, 1e-8)), 1) == labels[rows]
        none = np.argmax(f[rows] - LOG_PS, 1) == labels[rows]  # the held-out prior is uniform
        by_target.setdefault(t.name, []).append((np.mean(oracle), np.mean(none),
                                                 rows.size))
    for name, draws in by_target.items():
        s = suite["summary"][name]
        assert s["oracle"]["mean"] == pytest.approx(np.mean([d[0] for d in draws]), abs=1e-9), name
        assert s["oracle"]["worst"] == pytest.approx(min(d[0] for d in draws), abs=1e-9), name
        assert s["none"]["mean"] == pytest.approx(np.mean([d[1] for d in draws]), abs=1e-9), name
        assert suite["images"][name] == [min(d[2] for d in draws), max(d[2] for d in draws), len(draws)]
        assert s["em_family_gated"]["gap_mean"] == pytest.approx(
            s["em_family_gated"]["mean"] - max(s["mlls"]["mean"], s["bbse"]["mean"]), abs=1e-12)
    # LADE's raw logits are PC Softmax's adjusted ones: the same table
    assert results["lade"]["estimated_prior"]["accuracy"] == pytest.approx(e["accuracy"], abs=1e-9)


def test_estimators_on_a_well_separated_model(runs):
    e = runs[0]["ce"]["estimated_prior"]
    acc, none, oracle = e["accuracy"], e["accuracy"]["none"], e["accuracy"]["oracle"]
    uniform = evaluation.SETTING_NAMES.index("uniform")
    for m in evaluation.ESTIMATORS:
        for i, setting in enumerate(evaluation.SETTING_NAMES):
            # within 2 points of the oracle everywhere and never 0.5 below no adjustment on the uniform test
            assert acc[m][i] >= oracle[i] - 0.02, (m, setting, acc[m][i], oracle[i])
        assert acc[m][uniform] >= none[uniform] - 0.005, m
    for m in ("em_gated", "bbse_gated"):
        assert e["gated"][m][uniform] is True
        assert not any(e["gated"][m][i] for i in (0, 1, 2, 8, 9, 10))  # F50..F10, B10..B50 are adapted
    for m in ("em_k1", "em_k5"):
        assert np.mean(e["prior_l1_error"][m]) <= np.mean(e["prior_l1_error"]["em"]) + 0.01


def test_markdown_has_the_table(runs, tmp_path):
    text = report_text.markdown([runs[0]["ce"]], "t", [])
    assert "## Estimated target prior" in text and "| PC Softmax | EM + 5 labels per class |" in text
    assert "half of each test class held out" in text
    assert "### Shifts off the long tail" in text and "| MLLS + BCTS (EM without smoothing) | " in text
    json.dumps(runs[0]["ce"])  # JSON-able


@pytest.mark.parametrize("loss,form", [("softmax_ce", "pc"), ("lade", "lade")])
def test_bbse_fallback_keeps_the_models_own_output(loss, form):
    """An uninvertible confusion matrix gives no estimate: the row equals no adjustment (LADE's own
    uniform-prior output, PC's raw softmax), never LADE with the source prior plugged in."""
    labels = np.tile(np.arange(10), 60)
    f = _logits(labels, 3)
    f = f if form == "pc" else np.ascontiguousarray(f - LOG_PS, dtype=np.float32)
    p_s = (COUNTS / COUNTS.sum()).astype(np.float32)
    calib_f = np.zeros((40, 10), np.float32)  # a classifier that cannot tell classes apart on held-out data
    calib_y = np.tile(np.arange(10), 4).astype(np.int64)
    fitted = evaluation._shift_estimators((calib_f, calib_y), form, p_s, ("bbse",))["bbse"]
    prior, note = evaluation._estimate(fitted, f, form, p_s, "bbse")
    assert "fell back" in note
    adjusted = evaluation.adjust(f, form, p_s, prior)
    np.testing.assert_array_equal(np.argmax(adjusted, 1), np.argmax(f, 1))


def test_seed_comparison_pairs_the_seeds(tmp_path):
    """Two configs with three seeds each: mean ± std per method, and the paired bootstrap of the
    adjusted methods' difference equals lade.metrics.paired_bootstrap on the per-image hits."""
    labels = np.tile(np.arange(10), 80)
    dirs, hits = [], {"ce": [], "lade": []}
    for seed in (1, 2, 3):
        f = _logits(labels, 10 + seed)
        other = np.random.default_rng(seed).normal(scale=0.8, size=f.shape)  # a different model, same images
        for name, logits in (("ce", f), ("lade", np.ascontiguousarray(f - LOG_PS + other, np.float32))):
            d = tmp_path / f"{name}_{seed}"
            fake_run(d, "softmax_ce" if name == "ce" else "lade", logits, labels, COUNTS,
                     overrides=[f"run.seed={seed}"])
            dirs.append(d)
            adjusted = logits - LOG_PS if name == "ce" else logits  # PC Softmax / LADE on the uniform test
            hits[name].append(np.argmax(adjusted, 1) == labels)
    text, _ = report.write_comparison(dirs, tmp_path / "out")
    assert "## Seeds" in text
    top1 = 100 * np.array([h.mean() for h in hits["lade"]])
    assert f"{top1.mean():.2f} ± {top1.std(ddof=1):.2f}" in text
    # configs in the order of their first run: PC Softmax first
    ref = lade.metrics.paired_bootstrap(np.stack(hits["ce"]), np.stack(hits["lade"]), evaluation.SEED_REPLICATES,
                                        evaluation.SEED_LEVEL, seed=0)
    line = next(t for t in text.splitlines() if t.startswith("- PC Softmax"))
    assert f"{100 * ref['difference']:+.2f} points" in line and f"[{100 * ref['lo']:+.2f}, {100 * ref['hi']:+.2f}]" in line
    assert "3 seeds" in line and ref["lo"] < ref["difference"] < ref["hi"] and ref["difference"] != 0
    # then each seed alone, from the per-image hits stored in the results (no logits read again)
    per_seed = [t for t in text.splitlines() if t.startswith("  - seed ")]
    assert len(per_seed) == 3
    for seed, line, a, b in zip((1, 2, 3), per_seed, hits["ce"], hits["lade"]):
        one = lade.metrics.paired_bootstrap(a[None], b[None], evaluation.SEED_REPLICATES, evaluation.SEED_LEVEL,
                                            seed=0)
        assert line.startswith(f"  - seed {seed} alone: {100 * one['difference']:+.2f} points")
        assert f"[{100 * one['lo']:+.2f}, {100 * one['hi']:+.2f}]" in line


def test_results_store_each_methods_hits_image_by_image(runs):
    """The packed per-image hits of every method give its stored top-1 exactly."""
    results, f, labels = runs
    for r in results.values():
        for m in r["methods"]:
            hits = evaluation._unpack_correct(m["correct"])
            assert hits.shape == labels.shape and hits.mean() == pytest.approx(m["uniform"]["top1"], abs=1e-12)
    np.testing.assert_array_equal(evaluation._unpack_correct(results["ce"]["methods"][1]["correct"]),
                                  np.argmax(f, 1) == labels)  # Softmax: the raw logits


def test_seed_comparison_with_one_seed_each(tmp_path):
    """One seed per config: no seed table, but the paired difference over the test images, saying
    that it counts the test set's noise only; a run on other data is not paired with them."""
    labels = np.tile(np.arange(10), 20)
    f_lade, f_ce = _logits(labels, 1), _logits(labels, 2)
    fake_run(tmp_path / "a", "lade", f_lade, labels, COUNTS)
    fake_run(tmp_path / "b", "softmax_ce", f_ce, labels, COUNTS)
    fake_run(tmp_path / "c", "lade", f_lade, labels, COUNTS, overrides=["data.imbalance=50"])
    text, _ = report.write_comparison([tmp_path / "a", tmp_path / "b", tmp_path / "c"], tmp_path / "out")
    assert "## Seeds" not in text and "## Paired difference (one seed each)" in text
    ref = lade.metrics.paired_bootstrap(np.argmax(f_lade, 1) == labels, np.argmax(f_ce - LOG_PS, 1) == labels,
                                        evaluation.SEED_REPLICATES, evaluation.SEED_LEVEL, seed=0)
    lines = text.split("## Paired difference (one seed each)")[1].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("- LADE (") and " − PC Softmax (" in lines[0]
    assert f"{100 * ref['difference']:+.2f} points" in lines[0] and "the test images' noise only" in lines[0]
    assert f"[{100 * ref['lo']:+.2f}, {100 * ref['hi']:+.2f}]" in lines[0] and ref["difference"] != 0
