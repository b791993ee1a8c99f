"""Priors, CIFAR-LT profile (golden counts of spec §3.1), subsets, samplers, shifted tests, Dirichlet."""
import numpy as np
import pytest

from lade import priors, sampling

GOLDEN_C100_IMB100 = [500, 477, 455, 434, 415, 396, 378, 361, 344, 328, 314, 299, 286, 273, 260, 248, 237, 226, 216,
                      206, 197, 188, 179, 171, 163, 156, 149, 142, 135, 129, 123, 118, 112, 107, 102, 98, 93, 89, 85,
                      81, 77, 74, 70, 67, 64, 61, 58, 56, 53, 51, 48, 46, 44, 42, 40, 38, 36, 35, 33, 32, 30, 29, 27,
                      26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 15, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8,
                      8, 7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5]


def test_cifar_profiles_golden():
    assert priors.cifar_lt_counts(100, 100).tolist() == GOLDEN_C100_IMB100
    assert priors.cifar_lt_counts(10, 100).tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert priors.cifar_lt_counts(10, 50).tolist() == [5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100]
    assert priors.cifar_lt_counts(10, 10).tolist() == [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
    totals = {(100, 100): 10847, (100, 50): 12608, (100, 10): 19573, (10, 100): 12406, (10, 50): 13996,
              (10, 10): 20431}
    for (classes, imb), total in totals.items():
        assert priors.cifar_lt_counts(classes, imb).sum() == total
    c = priors.cifar_lt_counts(100, 100)
    assert ((c > 100).sum(), ((c >= 20) & (c <= 100)).sum(), (c < 20).sum()) == (35, 35, 30)


def test_step_profile_and_bad_args():
    assert priors.lt_profile(6, 100, 0.1, "step").tolist() == [100, 100, 100, 10, 10, 10]
    assert priors.lt_profile(1, 100, 0.1).tolist() == [100]
    with pytest.raises(ValueError, match="argument 'ratio'"):
        priors.lt_profile(10, 100, 2.0)
    with pytest.raises(ValueError, match="argument 'profile'"):
        priors.lt_profile(10, 100, 0.1, "linear")


def test_priors_from_counts_and_labels():
    p = priors.prior_from_counts([3, 1, 0, 4], eps=0.5)
    np.testing.assert_allclose(p, np.array([3, 1, 0.5, 4]) / 8.5, rtol=1e-6)
    with pytest.raises(ValueError, match="argument 'counts': class 2 has no samples"):
        priors.prior_from_counts([3, 1, 0, 4])
    with pytest.raises(ValueError, match="negative"):
        priors.prior_from_counts([3, -1, 2])
    labels = np.array([0, 2, 2, 1, 2], np.int64)
    np.testing.assert_allclose(priors.prior_from_labels(labels, 3), [0.2, 0.2, 0.6], rtol=1e-6)
    assert priors.class_counts(labels, 4).tolist() == [1, 1, 3, 0]
    with pytest.raises(ValueError, match=r"labels\[1\] = 2 is outside \[0, 2\)"):
        priors.class_counts(labels, 2)


def balanced_labels(classes=10, per_class=100, seed=0):
    rng = np.random.default_rng(seed)
    return rng.permutation(np.repeat(np.arange(classes), per_class)).astype(np.int64)


def test_lt_subset(tmp_path):
    labels = balanced_labels(10, 500)
    counts = priors.lt_profile(10, 500, 0.01)
    sub = sampling.lt_subset(labels, counts, seed=1)
    assert len(sub.indices) == counts.sum() and len(np.unique(sub.indices)) == counts.sum()
    assert np.bincount(labels[sub.indices], minlength=10).tolist() == counts.tolist()
    assert (sub.labels == labels[sub.indices]).all()
    assert (np.diff(sub.labels) >= 0).all()  # grouped by class
    again = sampling.lt_subset(labels, counts, seed=1)
    other = sampling.lt_subset(labels, counts, seed=2)
    assert (again.indices == sub.indices).all() and not (other.indices == sub.indices).all()
    sub.save_list(tmp_path / "train.txt")
    sub.save_counts(tmp_path / "counts.txt")
    lines = (tmp_path / "train.txt").read_text().splitlines()
    assert len(lines) == counts.sum() and lines[0] == f"{sub.indices[0]} 0"
    assert (tmp_path / "counts.txt").read_text().splitlines()[9] == f"9 {counts[9]}"
    with pytest.raises(ValueError, match=r"counts\[0\] = 501 but the dataset has 500"):
        sampling.lt_subset(labels, np.r_[501, counts[1:]])


def check_reproducible(make):
    a, b, c = make(seed=3), make(seed=3), make(seed=4)
    assert (a.epoch_indices(5) == b.epoch_indices(5)).all()
    assert not (a.epoch_indices(5) == c.epoch_indices(5)).all()
    assert not (a.epoch_indices(5) == a.epoch_indices(6)).all()


def lt_labels():
    counts = [1000, 250, 40, 10]
    return np.random.default_rng(0).permutation(np.repeat(np.arange(4), counts)).astype(np.int64), np.array(counts)


def test_instance_sampler():
    s = sampling.InstanceSampler(1000, seed=1)
    idx = s.epoch_indices(0)
    assert len(s) == 1000 and sorted(idx.tolist()) == list(range(1000))
    check_reproducible(lambda seed: sampling.InstanceSampler(1000, seed))


def test_class_aware_sampler():
    labels, counts = lt_labels()
    s = sampling.ClassAwareSampler(labels, 5, seed=0)  # class 4 is empty
    assert len(s) == 1000 * 4
    idx = s.epoch_indices(0)
    per_class = np.bincount(labels[idx], minlength=5)
    assert per_class.tolist() == [1000, 1000, 1000, 1000, 0]
    uses = np.bincount(idx[labels[idx] == 3], minlength=len(labels))[labels == 3]
    assert uses.min() == uses.max() == 100  # each tail sample cycled evenly
    s4 = sampling.ClassAwareSampler(labels, 5, seed=0, samples_per_class=4)
    runs = labels[s4.epoch_indices(1)].reshape(-1, 4)
    assert (runs == runs[:, :1]).all()  # 4 consecutive draws per class visit
    check_reproducible(lambda seed: sampling.ClassAwareSampler(labels, 5, seed))


def test_square_root_sampler_frequencies():
    labels, counts = lt_labels()
    s = sampling.SquareRootSampler(labels, 4, seed=0, length=200000)
    freq = np.bincount(labels[s.epoch_indices(0)], minlength=4) / 200000
    expected = np.sqrt(counts) / np.sqrt(counts).sum()
    np.testing.assert_allclose(freq, expected, atol=0.005)
    check_reproducible(lambda seed: sampling.SquareRootSampler(labels, 4, seed))


def test_progressively_balanced_sampler():
    labels, counts = lt_labels()
    s = sampling.ProgressivelyBalancedSampler(labels, 4, total_epochs=11, seed=0, length=200000)
    inst, bal = counts / counts.sum(), np.full(4, 0.25)
    for epoch, t in ((0, 0.0), (5, 0.5), (10, 1.0)):
        np.testing.assert_allclose(s.class_probabilities(epoch), (1 - t) * inst + t * bal, rtol=1e-12)
        freq = np.bincount(labels[s.epoch_indices(epoch)], minlength=4) / 200000
        np.testing.assert_allclose(freq, (1 - t) * inst + t * bal, atol=0.005)
    check_reproducible(lambda seed: sampling.ProgressivelyBalancedSampler(labels, 4, 10, seed))


def test_shifted_test_sizes_match_spec():
    test_labels = balanced_labels(100, 100, seed=7)
    train_prior = priors.prior_from_counts(priors.cifar_lt_counts(100, 100))
    sizes = {50: 2486, 25: 2956, 10: 3876, 5: 4932, 2: 7166}
    for direction in ("forward", "backward"):
        for ratio, size in sizes.items():
            sub = sampling.shifted_test_subset(test_labels, train_prior, ratio, direction)
            assert len(sub.indices) == size, (direction, ratio)
    assert len(sampling.shifted_test_indices(test_labels, train_prior, 1, "uniform")) == 10000
    fwd = sampling.shifted_test_subset(test_labels, train_prior, 50, "forward")
    bwd = sampling.shifted_test_subset(test_labels, train_prior, 50, "backward")
    assert fwd.counts[0] == 100 and fwd.counts[99] == 2 and bwd.counts[0] == 2 and bwd.counts[99] == 100
    np.testing.assert_allclose(fwd.prior, fwd.counts / fwd.counts.sum(), rtol=1e-6)
    # first k per class in stored order
    for c in (0, 50, 99):
        first_k = np.flatnonzero(test_labels == c)[:fwd.counts[c]]
        assert fwd.indices[test_labels[fwd.indices] == c].tolist() == first_k.tolist()
    assert (np.diff(fwd.indices) > 0).all()
    assert len(sampling.SHIFT_SETTINGS) == 11


def test_shift_ranking_tie_break_is_stable():
    labels = balanced_labels(4, 10)
    prior = np.array([0.2, 0.3, 0.3, 0.2], np.float32)  # ranks: 1, 2, 0, 3
    sub = sampling.shifted_test_subset(labels, prior, 10, "forward")
    expected = [int(10 * 0.1 ** (k / 3)) for k in range(4)]
    assert sub.counts.tolist() == [expected[2], expected[0], expected[1], expected[3]]


def test_shifted_bad_input():
    labels = balanced_labels(4, 10)
    with pytest.raises(ValueError, match="argument 'direction'"):
        sampling.shifted_test_subset(labels, np.full(4, 0.25), 10, "sideways")
    with pytest.raises(ValueError, match="argument 'train_prior' must sum to 1"):
        sampling.shifted_test_subset(labels, np.full(4, 0.3), 10, "forward")
    with pytest.raises(ValueError, match="class .* has 10 samples, the subset needs 20"):
        sampling.shifted_test_subset(labels, np.full(4, 0.25), 10, "forward", img_max=20)


def test_prior_test_subset_follows_any_prior():
    labels = balanced_labels(4, 10, seed=3)
    sub = sampling.prior_test_subset(labels, np.array([0.1, 0.6, 0.001, 0.299], np.float32))
    assert sub.counts.tolist() == [1, 10, 1, 4]  # int(10 p / max p), at least one
    for c in range(4):
        assert sub.indices[labels[sub.indices] == c].tolist() == np.flatnonzero(labels == c)[:sub.counts[c]].tolist()
    np.testing.assert_allclose(sub.prior, sub.counts / 16, rtol=1e-6)
    assert sampling.prior_test_subset(labels, np.full(4, 0.25), img_max=3).counts.tolist() == [3, 3, 3, 3]
    with pytest.raises(ValueError, match="argument 'target_prior' must sum to 1"):
        sampling.prior_test_subset(labels, np.full(4, 0.3))
    with pytest.raises(ValueError, match="class .* has 10 samples, the subset needs 20"):
        sampling.prior_test_subset(labels, np.full(4, 0.25), img_max=20)


def test_dirichlet_priors():
    alpha = np.array([0.5, 1.0, 2.0, 4.0])
    p = sampling.dirichlet_priors(4000, 4, alpha, seed=1)
    assert p.shape == (4000, 4) and (p > 0).all()
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)
    np.testing.assert_allclose(p.mean(0), alpha / alpha.sum(), atol=0.01)
    var = alpha * (alpha.sum() - alpha) / (alpha.sum() ** 2 * (alpha.sum() + 1))
    np.testing.assert_allclose(p.var(0), var, rtol=0.1)
    assert (sampling.dirichlet_priors(3, 4, 1.0, seed=1) == sampling.dirichlet_priors(3, 4, 1.0, seed=1)).all()
    assert not (sampling.dirichlet_priors(3, 4, 1.0, seed=1) == sampling.dirichlet_priors(3, 4, 1.0, seed=2)).all()
    tiny = sampling.dirichlet_priors(50, 100, 0.01, seed=0)
    assert (tiny >= 1e-12 * 0.99).all() and np.isfinite(np.log(tiny)).all()
