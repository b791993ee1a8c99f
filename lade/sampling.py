"""Sampling (C core: csrc/ltmath/sampling.c): long-tailed subsets, epoch samplers, shifted test
subsets (spec §2.3) and Dirichlet priors.

Samplers have ``len(sampler)`` (samples per epoch) and ``epoch_indices(epoch) -> int64
array``, a pure function of (seed, epoch): a resumed run needs only the epoch number.
"""
from collections import namedtuple

import numpy as np

from lade import _C, _args
from lade.priors import _integer_counts, as_prior, class_counts, prior_from_counts

__all__ = ["InstanceSampler", "ClassAwareSampler", "SquareRootSampler", "ProgressivelyBalancedSampler",
           "lt_subset", "LTSubset", "shifted_test_subset", "shifted_test_indices", "ShiftedSubset",
           "SHIFT_SETTINGS", "dirichlet_priors", "prior_test_subset"]

_DIRECTIONS = {"forward": 0, "backward": 1, "uniform": 2}
# The eleven shifted test settings of the notebooks (spec §2.3), in table order.
SHIFT_SETTINGS = ([("forward", r) for r in (50, 25, 10, 5, 2)] + [("uniform", 1)] +
                  [("backward", r) for r in (2, 5, 10, 25, 50)])


def _seed(seed, func):
    return _args.whole(seed, func, "seed", 0, 2 ** 64 - 1)


class InstanceSampler:
    """A fresh permutation of range(n) every epoch, seeded by (seed, epoch): the order a
    lade.data.Loader of n samples and the same seed gives without a sampler."""

    def __init__(self, n, seed=0):
        # stored for later epochs, so checked now; at most 2^31 - 1 samples
        self.n = _args.whole(n, "lade.sampling.InstanceSampler", "n", 0)
        self.seed = _seed(seed, "lade.sampling.InstanceSampler")

    def __len__(self):
        return self.n

    def epoch_indices(self, epoch):
        return _C.sample_instance(self.n, self.seed, epoch)


class ClassAwareSampler:
    """Class-aware sampling (spec §3.5): epoch length = largest class count * number of
    non-empty classes; classes in a cyclic shuffled order, samples_per_class consecutive draws
    from each class's own cyclic shuffled list. Each epoch restarts from (seed, epoch)."""

    def __init__(self, labels, classes, seed=0, samples_per_class=1):
        func = "lade.sampling.ClassAwareSampler"
        self.labels, self.classes = labels, _args.whole(classes, func, "classes", 1)
        self.seed, self.samples_per_class = _seed(seed, func), _args.whole(samples_per_class, func,
                                                                           "samples_per_class", 1)
        self._len = _C.class_aware_length(labels, self.classes)

    def __len__(self):
        return self._len

    def epoch_indices(self, epoch):
        return _C.sample_class_aware(self.labels, self.classes, self._len, self.samples_per_class, self.seed, epoch)


class _ClassProbSampler:
    def __init__(self, func, labels, classes, seed, length):
        self.labels, self.classes, self.seed = labels, _args.whole(classes, func, "classes", 1), _seed(seed, func)
        self.counts = class_counts(labels, classes)
        self._len = len(labels) if length is None else _args.whole(length, func, "length", 0)

    def __len__(self):
        return self._len

    def class_probabilities(self, epoch):
        raise NotImplementedError

    def epoch_indices(self, epoch):
        return _C.sample_by_class(self.labels, self.class_probabilities(epoch), self._len, self.seed, epoch)


class SquareRootSampler(_ClassProbSampler):
    """Class c drawn with probability proportional to n_c^q (q = 1/2: square-root sampling),
    then a sample of it uniformly, with replacement. Epoch length = len(labels) by default."""

    def __init__(self, labels, classes, seed=0, q=0.5, length=None):
        super().__init__("lade.sampling.SquareRootSampler", labels, classes, seed, length)
        self.prob = _C.class_prob_power(self.counts, q)

    def class_probabilities(self, epoch):
        return self.prob


class ProgressivelyBalancedSampler(_ClassProbSampler):
    """Progressively balanced sampling (Kang et al. 2020): class probabilities move linearly
    from instance-balanced (epoch 0) to class-balanced (epoch total_epochs - 1)."""

    def __init__(self, labels, classes, total_epochs, seed=0, length=None):
        super().__init__("lade.sampling.ProgressivelyBalancedSampler", labels, classes, seed, length)
        self.total_epochs = total_epochs

    def class_probabilities(self, epoch):
        return _C.class_prob_progressive(self.counts, epoch, self.total_epochs)


class LTSubset(namedtuple("LTSubset", "indices labels counts")):
    """A long-tailed subset: indices into the source dataset (grouped by class), their labels
    and the per-class counts."""

    def save_list(self, path, names=None):
        """Writes a list file, one "name label" line per sample (names[index], default the index)."""
        with open(path, "w") as f:
            for i, y in zip(self.indices.tolist(), self.labels.tolist()):
                f.write(f"{i if names is None else names[i]} {y}\n")

    def save_counts(self, path):
        """Writes one "class count" line per class."""
        with open(path, "w") as f:
            for c, k in enumerate(self.counts.tolist()):
                f.write(f"{c} {k}\n")


def lt_subset(labels, counts, seed=0):
    """Long-tailed subset of a dataset (spec §3.1): per class (ascending) its indices are
    shuffled with stream c of `seed` and the first counts[c] kept. Not bit-identical to the
    official numpy shuffle (spec §7.13)."""
    counts = _integer_counts(counts, "lade.sampling.lt_subset")
    out = _C.lt_subset(labels, counts, seed)
    return LTSubset(out, labels[out], counts)


ShiftedSubset = namedtuple("ShiftedSubset", "indices counts prior")


def shifted_test_subset(test_labels, train_prior, ratio, direction, img_max=None):
    """Shifted test subset (spec §2.3): classes ranked by train_prior (largest first, ties by
    lower class index); rank k keeps int(img_max * (1/ratio)**(k/(C-1))) (forward), the
    reverse (backward) or img_max (uniform) samples; the FIRST that many of each class in
    stored order. img_max defaults to the smallest class count of test_labels (100 on
    CIFAR-100). Returns ShiftedSubset(indices, counts, prior) with prior = counts / sum."""
    func = "lade.sampling.shifted_test_subset"
    if direction not in _DIRECTIONS:
        raise ValueError(f"{func}: argument 'direction' must be 'forward', 'backward' or 'uniform', got {direction!r}")
    prior = as_prior(train_prior, "train_prior", func)
    if img_max is None:
        img_max = int(class_counts(test_labels, prior.shape[0]).min())
    counts = _C.shift_counts(prior, img_max, ratio, _DIRECTIONS[direction])
    out = _C.first_k_per_class(test_labels, counts)
    return ShiftedSubset(out, counts, prior_from_counts(counts))


def prior_test_subset(test_labels, target_prior, img_max=None):
    """A test subset with the shape of any target prior: class c keeps the first
    max(1, int(img_max * p_c / max p)) of its samples in stored order (the most common class
    img_max, every class at least one). img_max defaults to the smallest class count of
    test_labels. Returns ShiftedSubset(indices, counts, prior)."""
    prior = as_prior(target_prior, "target_prior", "lade.sampling.prior_test_subset").astype(np.float64)
    if img_max is None:
        img_max = int(class_counts(test_labels, prior.shape[0]).min())
    counts = np.maximum(1, (img_max * prior / prior.max()).astype(np.int64))
    out = _C.first_k_per_class(test_labels, counts)
    return ShiftedSubset(out, counts, prior_from_counts(counts))


def shifted_test_indices(test_labels, train_prior, ratio, direction, img_max=None):
    """The indices of shifted_test_subset."""
    return shifted_test_subset(test_labels, train_prior, ratio, direction, img_max).indices


def dirichlet_priors(m, classes, alpha=1.0, seed=0):
    """m random priors (m, classes) float32 from Dirichlet(alpha) (scalar or per class); entries
    are floored at 1e-12 and renormalised so their logs are finite. Row r uses stream r."""
    func = "lade.sampling.dirichlet_priors"
    classes = _args.whole(classes, func, "classes", 1)
    try:
        a = np.ascontiguousarray(np.broadcast_to(np.asarray(alpha, np.float64), (classes,)))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{func}: argument 'alpha' must be a number or one per class ({classes}), got "
                         f"{np.shape(alpha)} ({e})") from None
    return _C.dirichlet_priors(a, m, seed)
