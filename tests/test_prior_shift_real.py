"""Target-prior estimation on real logits.

A classifier trained with plain softmax CE on a long-tailed CIFAR-100 subset (imbalance 100) is
evaluated on test subsets whose label distribution is shifted forward and backward (spec §2.3).
We compare: no adjustment (argmax f), the oracle PC correction (f - log p_s + log p_t with the
true test prior) and the corrections with p_t estimated by EM and BBSE from the unlabelled test
logits. Every fifth long-tailed training sample is held out, labelled, for calibration.

Two settings, both lade's classic ResNet-32 trained briefly:
  coarse16  20 coarse classes, 16x16 (2x2-pooled) images, 4 epochs (~3 minutes on two cores)
  fine32    100 fine classes, full 32x32 images, 3 epochs (~12 minutes on two cores)
The logits are cached in <repo>/.cache/prior_shift_<setting>.npz (git-ignored); delete the file
to retrain. Print the whole table with `python tests/test_prior_shift_real.py`.
"""
import sys
import tarfile
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
    if cfg["loss"] == "lade_ce":  # Balanced Softmax: softmax(f + log p_s) is the source posterior
        loss = lambda z, y, g: lade.losses.lade_ce(z, y, prior, g)  # noqa: E731
        source_logits = lambda z: np.ascontiguousarray(z + np.log(prior), dtype=np.float32)  # noqa: E731
    else:
        loss, source_logits = lade.losses.softmax_ce, lambda z: z
    net = lade.ResNet32(cfg["classes"], "classic", seed=0)
    opt = lade.SGD(net, lr=0.1, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    batch, epochs = 128, cfg["epochs"]
    for epoch in range(1, epochs + 1):
        lr = lade.warmup_multistep_lr(0.1, epoch, warmup_epochs=1, milestones=(epochs,), factor=0.1)
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


def evaluate(d, ratio, direction, method):
    """(none, oracle, estimated accuracy, result) on one shifted test subset."""
    prior = d["prior"]
    sub = lade.sampling.shifted_test_subset(d["test_labels"], prior, ratio, direction)
    z, y = d["test_logits"][sub.indices], d["test_labels"][sub.indices]
    none = lade.metrics.accuracy(z, y)
    oracle = lade.metrics.accuracy(lade.posthoc.pc_adjust(z, prior, sub.prior), y)
    res = lade.prior_shift.adapt(z, prior, calib_logits=d["calib_logits"], calib_labels=d["calib_labels"],
                                 method=method)
    return none, oracle, lade.metrics.accuracy(res.probs, y), res


@pytest.fixture(scope="module", params=list(SETTINGS))
def real_logits(request, data_dir):
    return load_logits(data_dir, request.param)


@pytest.mark.parametrize("ratio,direction", SHIFTS)
@pytest.mark.parametrize("method", ["em", "bbse"])
def test_estimated_prior_is_close_to_oracle(real_logits, ratio, direction, method):
    none, oracle, estimated, res = evaluate(real_logits, ratio, direction, method)
    print(f"{direction}-{ratio} {method}: none {none:.4f} oracle {oracle:.4f} estimated {estimated:.4f}")
    assert estimated >= oracle - 0.03
    if direction == "backward":
        # the training prior is far from the test prior: adjusting must pay off clearly
        assert estimated >= none + 0.05


if __name__ == "__main__":
    data = REPO_ROOT.parent / "shared" / "data"
    for name in sys.argv[1:] or list(SETTINGS):
        d = load_logits(data, name)
        print(f"{name}: {len(d['calib_labels'])} calibration, {len(d['test_labels'])} test logits")
        print(f"{'shift':<12}{'none':>8}{'oracle':>8}{'EM':>8}{'BBSE':>8}")
        for ratio, direction in SHIFTS:
            none, oracle, em, _ = evaluate(d, ratio, direction, "em")
            bbse = evaluate(d, ratio, direction, "bbse")[2]
            print(f"{direction}-{ratio:<3}{none:>9.4f}{oracle:>8.4f}{em:>8.4f}{bbse:>8.4f}")
