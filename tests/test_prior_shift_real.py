"""Target-prior estimation on real logits.

A classifier trained on a long-tailed CIFAR subset (imbalance 100) is evaluated on test subsets whose label distribution is shifted forward and backward (spec §2.3).
We compare: no adjustment (argmax f), the oracle PC correction (f - log p_s + log p_t with the
true test prior) and the corrections with p_t estimated by EM and BBSE from the unlabelled test
logits. Every fifth long-tailed training sample is held out, labelled, for calibration.

Settings, all lade's classic ResNet-32 trained briefly (wall times on the shared two cores):
  cifar10_bs   CIFAR-10-LT (JPEG set), 16x16, Balanced Softmax, 5 epochs (~10 min); balanced test
               accuracy ~30%, calibration confusion condition number ~1.6e3
  coarse16     CIFAR-100 coarse (20 classes), 16x16, softmax CE, 4 epochs (~5 min); ~15%, ~1e6
  coarse16_bs  as coarse16 with Balanced Softmax (~9 min); ~19%, ~1e5
  fine32       CIFAR-100 fine (100 classes), 32x32, softmax CE, 3 epochs (~30 min); ~8%, ~1e6
With Balanced Softmax the stored logits are f + log p_s, the source posterior logits. The tests
use cifar10_bs (the prior is identifiable) and coarse16 (it is not: both methods must say so).
The logits are cached in <repo>/.cache/prior_shift_<setting>.npz (git-ignored); delete a file to
retrain. Print the tables with `PYTHONPATH=. python tests/test_prior_shift_real.py [setting ...]`, and the
estimated-prior tables of every estimator with `PYTHONPATH=. python tests/test_prior_shift_real.py --estimated`.
  cifar10_ce   as cifar10_bs with softmax CE (evaluated as PC Softmax)
  cifar10_lade as cifar10_bs with the LADE loss (alpha 0.1, lambda 0.01)
"""
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

import lade

pytestmark = pytest.mark.experiment  # python -m pytest -m experiment tests/test_prior_shift_real.py

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / ".cache"
SETTINGS = {
    "coarse16": {"label": "coarse", "classes": 20, "img_max": 2500, "side": 16, "epochs": 4, "loss": "softmax_ce"},
    "coarse16_bs": {"label": "coarse", "classes": 20, "img_max": 2500, "side": 16, "epochs": 4, "loss": "lade_ce"},
    "fine32": {"label": "fine", "classes": 100, "img_max": 500, "side": 32, "epochs": 3, "loss": "softmax_ce"},
    "cifar10_bs": {"label": "cifar10", "classes": 10, "img_max": 5000, "side": 16, "epochs": 5, "loss": "lade_ce"},
    "cifar10_ce": {"label": "cifar10", "classes": 10, "img_max": 5000, "side": 16, "epochs": 5, "loss": "softmax_ce"},
    "cifar10_lade": {"label": "cifar10", "classes": 10, "img_max": 5000, "side": 16, "epochs": 5, "loss": "lade"},
}
SHIFTS = [(50, "backward"), (10, "backward"), (10, "forward"), (50, "forward")]


def _images(x, side):
    x = x.astype(np.float32) / 255.0
    if side == 16:  # 2x2 average pooling keeps the run short
        x = x.reshape(len(x), 3, 16, 2, 16, 2).mean(axis=(3, 5))
    mean = np.array([0.4914, 0.4822, 0.4465], np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.2023, 0.1994, 0.2010], np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def _load_cifar10_jpeg(archive):
    """{split: (jpeg bytes list, labels)} from cifar10-jpeg.tar.gz, ordered by (class, file name)."""
    files, classes = {"train": [], "test": []}, None
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = member.name.split("/")
            if parts[-1] == "classes.txt":
                classes = tar.extractfile(member).read().decode().split()
            elif member.isfile() and parts[-1].endswith(".jpg") and len(parts) >= 3 and parts[-3] in files:
                files[parts[-3]].append((parts[-2], parts[-1], tar.extractfile(member).read()))
    out = {}
    for split, entries in files.items():
        entries.sort()
        out[split] = ([e[2] for e in entries], np.array([classes.index(e[0]) for e in entries], np.int64))
    return out


def _decode(jpegs):
    return np.stack([lade.data.decode_jpeg(b) for b in jpegs]).transpose(0, 3, 1, 2)


def _train_and_predict(data_dir, setting):
    cfg = SETTINGS[setting]
    if cfg["label"] == "cifar10":
        data = _load_cifar10_jpeg(data_dir / "cifar10-jpeg.tar.gz")
        train_jpegs, train_y = data["train"]
        test_x, test_y = _decode(data["test"][0]), data["test"][1]
    else:
        archive = data_dir / "cifar-100-binary.tar.gz"
        train_x, train_y = lade.data.load_cifar(archive, "train", label=cfg["label"])
        test_x, test_y = lade.data.load_cifar(archive, "test", label=cfg["label"])
    counts = lade.priors.lt_profile(cfg["classes"], cfg["img_max"], 0.01)
    subset = lade.sampling.lt_subset(train_y, counts, seed=0)
    held = np.zeros(len(subset.indices), bool)
    held[::5] = True  # held out, labelled, for calibration: same distribution as training
    fit_idx, cal_idx = subset.indices[~held], subset.indices[held]
    if cfg["label"] == "cifar10":  # decode only the long-tailed subset
        train_x = np.zeros((len(train_y), 3, 32, 32), np.uint8)
        train_x[subset.indices] = _decode([train_jpegs[i] for i in subset.indices])
    xf, yf = _images(train_x[fit_idx], cfg["side"]), train_y[fit_idx]
    prior = lade.priors.prior_from_labels(yf, cfg["classes"])
    if cfg["loss"] in ("lade_ce", "lade"):  # Balanced Softmax / LADE: softmax(f + log p_s) is the source posterior
        loss = (lade.losses.LADELoss(prior, alpha=0.1, remine_lambda=0.01) if cfg["loss"] == "lade" else
                lambda z, y, g: lade.losses.lade_ce(z, y, prior, g))
        source_logits = lambda z: np.ascontiguousarray(z + np.log(prior), dtype=np.float32)  # noqa: E731
    else:
        loss, source_logits = lade.losses.softmax_ce, lambda z: z
    net = lade.ResNet32(cfg["classes"], "classic", seed=0)
    opt = lade.SGD(net, lr=0.1, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    batch, epochs = 128, cfg["epochs"]
    for epoch in range(1, epochs + 1):
        lr = lade.warmup_multistep_lr(0.1, epoch, warmup_epochs=1, warmup_start=1 / 3, milestones=(epochs,), factor=0.1)
        order = rng.permutation(len(xf))
        for start in range(0, len(order) - batch + 1, batch):
            idx = np.sort(order[start:start + batch])
            lade.train_step(net, opt, xf[idx], yf[idx], loss, lr=lr)
    return {
        "prior": prior,
        "test_logits": source_logits(lade.predict(net, _images(test_x, cfg["side"]))), "test_labels": test_y,
        "calib_logits": source_logits(lade.predict(net, _images(train_x[cal_idx], cfg["side"]))),
        "calib_labels": train_y[cal_idx],
    }


def load_logits(data_dir, setting):
    path = CACHE_DIR / f"prior_shift_{setting}.npz"
    if not path.exists():
        CACHE_DIR.mkdir(exist_ok=True)
        np.savez(path, **_train_and_predict(data_dir, setting))
    with np.load(path) as f:
        return {k: np.ascontiguousarray(f[k]) for k in f.files}


def evaluate(d, ratio, direction, method, calib=None):
    """(none, oracle, estimated accuracy, result) on one shifted test subset. calib = (logits,
    labels, prior) overrides the long-tailed calibration set (and the prior it embodies)."""
    prior, test_logits, test_labels = d["prior"], d["test_logits"], d["test_labels"]
    if calib is None:
        calib = (d["calib_logits"], d["calib_labels"], prior)
        pool = np.arange(len(test_labels))
    else:
        pool = calib[3]
    sub = lade.sampling.shifted_test_subset(test_labels[pool], prior, ratio, direction)
    z, y = test_logits[pool][sub.indices], test_labels[pool][sub.indices]
    none = lade.metrics.accuracy(z, y)
    oracle = lade.metrics.accuracy(lade.posthoc.pc_adjust(z, prior, sub.prior), y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = lade.prior_shift.adapt(z, calib[2], calib_logits=calib[0], calib_labels=calib[1], method=method,
                                     gate=None, family="free")
    res.warned = any("ill-conditioned" in str(w.message) for w in caught)
    return none, oracle, lade.metrics.accuracy(res.probs, y), res


def balanced_calibration(d):
    """Half of the (balanced) test set as labelled calibration data, the other half as the pool
    the shifted subsets are drawn from: 500 calibration samples per class instead of 10 to 1000."""
    order = np.random.default_rng(0).permutation(len(d["test_labels"]))
    cal, pool = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2:])
    classes = len(d["prior"])
    return (np.ascontiguousarray(d["test_logits"][cal]), d["test_labels"][cal],
            lade.priors.prior_from_labels(d["test_labels"][cal], classes), pool)


@pytest.fixture(scope="module")
def cifar10(data_dir):
    return load_logits(data_dir, "cifar10_bs")


@pytest.mark.parametrize("ratio,direction", SHIFTS)
@pytest.mark.parametrize("method", ["em", "bbse"])
def test_cifar10_lt_estimated_prior(cifar10, ratio, direction, method):
    """CIFAR-10-LT, Balanced Softmax: the classes are separable enough (condition number ~1.6e3)."""
    none, oracle, estimated, res = evaluate(cifar10, ratio, direction, method)
    print(f"{direction}-{ratio} {method}: none {none:.4f} oracle {oracle:.4f} estimated {estimated:.4f}")
    assert not res.warned and not res.fell_back
    if direction == "forward":
        assert estimated >= oracle - 0.02
    else:
        # well above no adjustment, but short of the oracle: the long-tailed calibration set has
        # only 10-30 samples of the classes that dominate a backward-shifted test set, so their
        # confusion columns (BBSE) and calibration (EM) are poorly estimated; see the next test
        assert estimated >= none + 0.25
        assert estimated >= oracle - (0.12 if method == "em" else 0.16)


@pytest.mark.parametrize("ratio,direction", SHIFTS)
@pytest.mark.parametrize("method", ["em", "bbse"])
def test_cifar10_lt_with_balanced_calibration_reaches_the_oracle(cifar10, ratio, direction, method):
    """The same model with 500 calibration samples per class: the gap above was the calibration data."""
    none, oracle, estimated, res = evaluate(cifar10, ratio, direction, method, calib=balanced_calibration(cifar10))
    print(f"{direction}-{ratio} {method} balanced calibration: none {none:.4f} oracle {oracle:.4f} "
          f"estimated {estimated:.4f}")
    assert not res.warned and not res.fell_back
    assert estimated >= oracle - (0.03 if method == "bbse" else 0.07)
    if direction == "backward":
        assert estimated >= none + 0.35


@pytest.mark.parametrize("ratio,direction", SHIFTS)
def test_weak_model_is_flagged(data_dir, ratio, direction):
    """CIFAR-100 coarse, 4 epochs of softmax CE at 16x16 (balanced test accuracy ~15%): the model
    barely separates the tail classes (condition number ~1e6), so their prior is not identifiable
    from its predictions. Both methods warn; BBSE falls back to no shift rather than guess."""
    d = load_logits(data_dir, "coarse16")
    none, oracle, em, em_res = evaluate(d, ratio, direction, "em")
    _, _, bbse, bbse_res = evaluate(d, ratio, direction, "bbse")
    print(f"{direction}-{ratio}: none {none:.4f} oracle {oracle:.4f} em {em:.4f} bbse {bbse:.4f}")
    assert em_res.warned and bbse_res.warned and bbse_res.fell_back
    assert em_res.condition_number > 1e5
    np.testing.assert_allclose(bbse_res.prior, d["prior"], rtol=1e-5)
    assert abs(bbse - none) <= 0.01


# ---- every estimator of lade.prior_shift on PC Softmax (CE) and LADE, under the report's protocol --------
# (lade.app.evaluation.estimated_prior_results: half of each test class held out, labelled; the shifted tests of
# spec §2.3 drawn from the other half, 500 images per class). The stored logits are source-posterior logits
# (LADE: f + log p_s), so the PC form f - log p_s + log p_t is LADE's f + log p_t.
# The goals: within 1 point of the oracle on forward shifts, within 2 on backward shifts, never more
# than 0.5 below no adjustment on the uniform test.
ESTIMATED_SETTINGS = ["cifar10_ce", "cifar10_lade"]


def estimated_prior_table(d):
    from lade.app import evaluation
    return evaluation.estimated_prior_results(d["test_logits"], d["test_labels"], d["prior"], "pc")


@pytest.fixture(scope="module", params=ESTIMATED_SETTINGS)
def estimated(request, data_dir):
    return request.param, estimated_prior_table(load_logits(data_dir, request.param))


def _goal_misses(table, estimator):
    """Points (x100) by which each goal is missed on each shifted test (0 = met)."""
    from lade.app import evaluation
    acc, oracle, none = table["accuracy"][estimator], table["accuracy"]["oracle"], table["accuracy"]["none"]
    misses = {}
    for (direction, _), setting, a, o, n in zip(lade.sampling.SHIFT_SETTINGS, evaluation.SETTING_NAMES, acc, oracle, none):
        slack = {"forward": o - 0.01, "backward": o - 0.02, "uniform": n - 0.005}[direction]
        misses[setting] = round(max(0.0, slack - a) * 100, 2)
    return misses


# Measured (5-epoch models at 16x16, 34 % / 38 % top-1 on the uniform test; docs/label-shift.md "An unknown target prior
# on real models"): the gated and the shrunk estimators meet the uniform goal on both models, ungated EM and
# BBSE miss it by 2.4 and 2.5 points on PC Softmax. On LADE, BBSE stays within 2.6 points of the oracle on
# every shifted test (forward goal missed by up to 1.25 points, backward by up to 0.6); on PC Softmax EM is
# within 2.4 points of the oracle on forward shifts and 13 points short on B50.
UNIFORM = 5  # index of the uniform test in lade.sampling.SHIFT_SETTINGS


def test_gated_and_shrunk_estimators_never_cost_more_than_half_a_point_on_uniform(estimated):
    name, table = estimated
    none = table["accuracy"]["none"][UNIFORM]
    for m in ("em_gated", "em_gated_shrunk", "bbse_gated", "em_shrunk", "bbse_shrunk"):
        assert table["accuracy"][m][UNIFORM] >= none - 0.005, (name, m, table["accuracy"][m][UNIFORM], none)
    for m in ("em_gated", "bbse_gated"):
        assert table["gated"][m][UNIFORM], (name, m)


def test_strong_shifts_are_adapted_to(estimated):
    name, table = estimated
    acc, none = table["accuracy"], table["accuracy"]["none"]
    for m in table["estimators"]:
        for i in (0, 10):  # F50, B50: every estimator gains at least 5 points over no adjustment
            assert acc[m][i] >= none[i] + 0.05, (name, m, i, acc[m][i], none[i])
    for m in ("em_gated", "bbse_gated"):
        assert not any(table["gated"][m][i] for i in (0, 1, 9, 10)), (name, m)  # F50, F25, B25, B50


def test_best_estimator_against_the_oracle(estimated):
    name, table = estimated
    acc, oracle = table["accuracy"], table["accuracy"]["oracle"]
    if name == "cifar10_lade":  # BBSE: within 3 points of the oracle on every shifted test (measured: 2.6, B10)
        assert all(a >= o - 0.03 for a, o in zip(acc["bbse"], oracle)), acc["bbse"]
    else:  # PC Softmax: EM within 2.5 points on forward shifts, more than 10 points short on B50
        assert all(a >= o - 0.025 for a, o in zip(acc["em_gated"][:5], oracle[:5])), acc["em_gated"]
        assert acc["em_gated"][10] < oracle[10] - 0.10


if __name__ == "__main__":
    data = REPO_ROOT.parent / "shared" / "data"
    if sys.argv[1:2] == ["--estimated"]:  # the estimated-prior tables of every estimator
        from lade.app import evaluation
        for name in sys.argv[2:] or ESTIMATED_SETTINGS:
            table = estimated_prior_table(load_logits(data, name))
            print(f"{name}: top-1 % ({table['protocol']})")
            print(f"{'p_t':<36}" + "".join(f"{s:>8}" for s in table["settings"]))
            rows = [("none", "no adjustment"), ("oracle", "oracle")] + list(table["estimators"].items())
            for key, label in rows:
                print(f"{label:<36}" + "".join(f"{100 * v:>8.2f}" for v in table["accuracy"][key]))
            print("goal misses (points):")
            for key, label in table["estimators"].items():
                misses = _goal_misses(table, key)
                print(f"{label:<36}" + "".join(f"{misses[s]:>8.2f}" for s in evaluation.SETTING_NAMES))
        sys.exit(0)
    for name in sys.argv[1:] or list(SETTINGS):
        d = load_logits(data, name)
        for tag, calib in [("", None), (", balanced calibration", balanced_calibration(d))]:
            if calib is not None and name != "cifar10_bs":
                continue
            print(f"{name}{tag}: {len(d['calib_labels']) if calib is None else len(calib[1])} calibration logits")
            print(f"{'shift':<13}{'none':>8}{'oracle':>8}{'EM':>8}{'BBSE':>8}{'cond':>10}")
            for ratio, direction in SHIFTS:
                none, oracle, em, res = evaluate(d, ratio, direction, "em", calib)
                _, _, bbse, bres = evaluate(d, ratio, direction, "bbse", calib)
                flag = " (BBSE fell back)" if bres.fell_back else ""
                print(f"{direction + '-' + str(ratio):<13}{none:>8.4f}{oracle:>8.4f}{em:>8.4f}{bbse:>8.4f}"
                      f"{res.condition_number:>10.3g}{flag}")
