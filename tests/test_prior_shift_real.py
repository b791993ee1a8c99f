"""Target-prior estimation on real logits.

A classifier trained with plain softmax CE on a long-tailed CIFAR-100 subset
(coarse labels, 20 classes, imbalance 100) is evaluated on test subsets whose
label distribution is shifted forward and backward (spec §2.3). We compare:
no adjustment (argmax f), the oracle PC correction (f - log p_s + log p_t with
the true test prior) and the corrections with p_t estimated by EM and BBSE from
the unlabelled test logits. The model is lade's classic ResNet-32 trained for a
few epochs on 16x16 downsampled images, which keeps the run to about two minutes.
"""
import numpy as np
import pytest

import lade

# About six minutes on two cores: run with `python -m pytest -m experiment tests/test_prior_shift_real.py`.
pytestmark = pytest.mark.experiment

CLASSES = 20
EPOCHS = 4


@pytest.fixture(scope="module")
def real_logits(data_dir):
    train_x, train_y = lade.data.load_cifar(data_dir / "cifar-100-binary.tar.gz", "train", label="coarse")
    test_x, test_y = lade.data.load_cifar(data_dir / "cifar-100-binary.tar.gz", "test", label="coarse")
    counts = lade.priors.lt_profile(CLASSES, 2500, 0.01)
    subset = lade.sampling.lt_subset(train_y, counts, seed=0)
    # every fifth LT sample is held out, labelled, for calibration (same distribution as training)
    held = np.zeros(len(subset.indices), bool)
    held[::5] = True
    fit_idx, cal_idx = subset.indices[~held], subset.indices[held]

    def images(x):
        # 2x2 average pooling to 16x16 keeps the run short; then CIFAR normalisation
        x = x.astype(np.float32).reshape(len(x), 3, 16, 2, 16, 2).mean(axis=(3, 5)) / 255.0
        mean = np.array([0.4914, 0.4822, 0.4465], np.float32).reshape(1, 3, 1, 1)
        std = np.array([0.2023, 0.1994, 0.2010], np.float32).reshape(1, 3, 1, 1)
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)

    xf, yf = images(train_x[fit_idx]), train_y[fit_idx]
    prior = lade.priors.prior_from_labels(yf, CLASSES)
    net = lade.ResNet32(CLASSES, "classic", seed=0)
    opt = lade.SGD(net, lr=0.1, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    batch = 128
    for epoch in range(1, EPOCHS + 1):
        lr = lade.warmup_multistep_lr(0.1, epoch, warmup_epochs=1, milestones=(EPOCHS,), factor=0.1)
        order = rng.permutation(len(xf))
        for start in range(0, len(order) - batch + 1, batch):
            idx = np.sort(order[start:start + batch])
            lade.train_step(net, opt, xf[idx], yf[idx], lade.losses.softmax_ce, lr=lr)
    return {
        "prior": prior,
        "test": (lade.predict(net, images(test_x)), test_y),
        "calib": (lade.predict(net, images(train_x[cal_idx])), train_y[cal_idx]),
    }


@pytest.mark.parametrize("ratio,direction", [(50, "backward"), (10, "backward"), (10, "forward"), (50, "forward")])
@pytest.mark.parametrize("method", ["em", "bbse"])
def test_estimated_prior_is_close_to_oracle(real_logits, ratio, direction, method):
    prior = real_logits["prior"]
    logits, labels = real_logits["test"]
    sub = lade.sampling.shifted_test_subset(labels, prior, ratio, direction)
    z, y = logits[sub.indices], labels[sub.indices]
    none = lade.metrics.accuracy(z, y)
    oracle = lade.metrics.accuracy(lade.posthoc.pc_adjust(z, prior, sub.prior), y)
    cal_z, cal_y = real_logits["calib"]
    res = lade.prior_shift.adapt(z, prior, calib_logits=cal_z, calib_labels=cal_y, method=method)
    estimated = lade.metrics.accuracy(res.probs, y)
    print(f"{direction}-{ratio} {method}: none {none:.4f} oracle {oracle:.4f} estimated {estimated:.4f} "
          f"cond {res.condition_number:.3g} fell back {res.fell_back}")
    assert estimated >= oracle - 0.03
    if direction == "backward":
        # the training prior is far from the test prior: adjusting must pay off clearly
        assert estimated >= none + 0.05
