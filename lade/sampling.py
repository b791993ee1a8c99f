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
           "SHIFT_SETTINGS", "dirichlet_priors", "prior_test_subset", "SUITE_TARGETS", "SuiteTarget", "shift_suite"]

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


# The suite of shifts nobody tuned to (issue 26 §1): name -> (kind, parameter). Every draw takes its
# images at random, without replacement, from a pool with the same number of images per class (the
# held-out halves' other half), so a class never has more than the pool holds.
#   lt:   a long-tail profile of that ratio (spec §2.3's counts, img_max the pool's per-class count)
#         over a random class order;
#   dir:  a Dirichlet(alpha) prior, class c keeping int(img_max * p_c / max p) images (classes whose
#         share rounds to 0 are absent: a small alpha gives a sparse target);
#   k:    k random classes present, every pool image of each (left out when k >= classes);
#   size: that many images drawn uniformly from the whole pool (its label frequencies: no shift but
#         the sampling noise of a small set);
#   pool: the whole pool (the uniform test; one draw, there is nothing to vary).
SUITE_TARGETS = {
    "LT10": ("lt", 10), "LT50": ("lt", 50),
    "Dir0.1": ("dir", 0.1), "Dir0.3": ("dir", 0.3), "Dir1": ("dir", 1.0), "Dir3": ("dir", 3.0),
    "k2": ("k", 2), "k5": ("k", 5), "k20": ("k", 20),
    "n200": ("size", 200), "n1000": ("size", 1000), "pool": ("pool", None),
}
SUITE_DRAWS = 5  # draws of every target but the pool
_SUITE_SEED = 26  # draw d of the t-th target uses seed _SUITE_SEED * 1000 + 10 * t + d

SuiteTarget = namedtuple("SuiteTarget", "name draw indices counts prior")


def shift_suite(pool_labels, classes, draws=SUITE_DRAWS, targets=None):
    """The suite's target sets drawn from a pool of labelled images (pool_labels: the pool's labels,
    every class with the same count img_max). Yields SuiteTarget(name, draw, indices into the pool,
    counts, prior = counts / sum) for every target of SUITE_TARGETS (or the names in `targets`) and
    draws 0 .. draws - 1 (the pool once). Seeds are fixed: the same pool gives the same sets."""
    func = "lade.sampling.shift_suite"
    classes = _args.whole(classes, func, "classes", 2)
    draws = _args.whole(draws, func, "draws", 1)
    names = list(SUITE_TARGETS) if targets is None else list(targets)
    unknown = [t for t in names if t not in SUITE_TARGETS]
    if unknown:
        raise ValueError(f"{func}: unknown target(s) {unknown}; known: {list(SUITE_TARGETS)}")
    have = class_counts(pool_labels, classes)
    img_max = int(have.min())
    if img_max < 1 or have.max() != img_max:
        raise ValueError(f"{func}: argument 'pool_labels' must hold the same number (>= 1) of images of every "
                         f"class, got {int(have.min())} to {int(have.max())}")
    ranks = np.arange(classes, 0, -1, dtype=np.float32)  # strictly decreasing: a permutation of it orders the classes
    for t, name in enumerate(list(SUITE_TARGETS)):
        if name not in names:
            continue
        kind, param = SUITE_TARGETS[name]
        if kind == "k" and param >= classes:
            continue
        for d in range(1 if kind == "pool" else draws):
            seed = _SUITE_SEED * 1000 + 10 * t + d
            if kind == "lt":
                order = _C.sample_instance(classes, seed, 0)
                counts = _C.shift_counts(prior_from_counts(ranks[np.argsort(order)].astype(np.int64)), img_max,
                                         param, _DIRECTIONS["forward"])
            elif kind == "dir":
                p = dirichlet_priors(1, classes, param, seed)[0].astype(np.float64)
                counts = (img_max * p / p.max()).astype(np.int64)
            elif kind == "k":
                counts = np.zeros(classes, np.int64)
                counts[_C.sample_instance(classes, seed, 0)[:param]] = img_max
            if kind in ("size", "pool"):
                n = pool_labels.shape[0] if kind == "pool" else min(param, pool_labels.shape[0])
                indices = np.sort(_C.sample_instance(pool_labels.shape[0], seed, 0)[:n])
                counts = class_counts(pool_labels[indices], classes)
            else:
                indices = _C.lt_subset(pool_labels, counts, seed)
            yield SuiteTarget(name, d, indices, counts, (counts / counts.sum()).astype(np.float32))
