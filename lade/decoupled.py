"""The decoupled second stage (Kang et al., ICLR 2020) on saved penultimate features
(C core: csrc/ltmath/decoupled.c).

A model's backbone is kept; only its linear classifier (logits = features @ weight.T + bias)
changes:
  crt                     re-train the classifier with class-balanced sampling (cross-entropy)
  lade_retrain            re-train it with the LADE loss and instance sampling
  lws                     learn one scale per class, logits[:, c] = scales[c] * (x @ weight[c] + bias[c])
  tau_normalize_select    weight rows divided by ||w_c||^tau, tau chosen on a held-out set by a grid
  logits                  the classifier's logits for features, with optional scales

Training is SGD (momentum, weight decay) with a cosine learning rate per epoch; epoch e's batches
are consecutive slices of lade.sampling's instance or class-balanced order for (seed, e), so a run
is a pure function of its arguments (see lade_ltmath.h). Features float32 (n, dim) C-contiguous,
labels int64 (n,), weight float32 (classes, dim), bias float32 (classes,).
"""
import numpy as np

from lade import _C, _args
from lade.losses import LADE_DEFAULTS
from lade.priors import as_prior, class_counts

__all__ = ["Classifier", "crt", "lade_retrain", "instance_epochs", "lws", "lws_loss", "tau_normalize_select",
           "logits", "DEFAULT_TAUS"]

SAMPLING = {"instance": 0, "class_balanced": 1}
# tau from 0 (the classifier as trained) to 2 in steps of 0.1
DEFAULT_TAUS = np.round(np.arange(0, 21) * 0.1, 1).astype(np.float32)


class Classifier:
    """A linear classifier, optionally with per-class scales (LWS) or a tau (tau-normalisation)."""

    def __init__(self, weight, bias, scales=None, tau=None, info=None):
        self.weight, self.bias, self.scales, self.tau = weight, bias, scales, tau
        self.info = {} if info is None else info

    def logits(self, features):
        return logits(features, self.weight, self.bias, self.scales)


def _sgd(func, epochs, batch_size, lr, momentum, weight_decay, sampling):
    if sampling not in SAMPLING:
        raise ValueError(f"{func}: argument 'sampling' must be 'instance' or 'class_balanced', got {sampling!r}")
    # C checks the numbers (csrc/ltmath/decoupled.c check_fit_config)
    return dict(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
                sampling=SAMPLING[sampling])


def _classes(labels, classes, func):
    """The number of classes, bounded before the classifier is allocated from it."""
    if classes is None:
        if not isinstance(labels, np.ndarray) or labels.size == 0:
            raise ValueError(f"{func}: argument 'classes' is needed when 'labels' is empty or not an array")
        top = int(labels.max())
        if top >= _args.MAX_CLASSES:
            raise ValueError(f"{func}: argument 'labels' holds label {top}; at most {_args.MAX_CLASSES} classes "
                             f"are supported")
        return top + 1
    return _args.whole(classes, func, "classes", 1, _args.MAX_CLASSES)


def _init(classes, dim, init, seed, func):
    """(weight, bias) to start from: copies of `init`, or PyTorch nn.Linear's default
    (uniform in +-1/sqrt(dim)) drawn with NumPy's generator for `seed`."""
    if init is not None:
        try:
            weight, bias = init
        except (TypeError, ValueError):
            raise TypeError(f"{func}: argument 'init' must be a (weight, bias) pair, got {type(init).__name__}") \
                from None
        return np.array(weight, dtype=np.float32, order="C"), np.array(bias, dtype=np.float32, order="C")
    bound = 1.0 / np.sqrt(dim)
    rng = np.random.default_rng(seed)
    try:
        weight = rng.uniform(-bound, bound, (classes, dim)).astype(np.float32)
    except MemoryError:
        raise MemoryError(f"{func}: cannot allocate a classifier of {classes} classes x {dim} features") from None
    return weight, rng.uniform(-bound, bound, classes).astype(np.float32)


def _fit(func, features, labels, classes, init, seed, loss, prior, alpha, remine_lambda, sgd):
    if not isinstance(features, np.ndarray) or features.ndim != 2 or 0 in features.shape:
        raise ValueError(f"{func}: argument 'features' must be a 2-d array (n, dim) with n, dim >= 1, got "
                         f"{getattr(features, 'shape', type(features).__name__)}")
    classes = _classes(labels, classes, func)
    seed = _args.whole(seed, func, "seed", 0, 2 ** 64 - 1)
    weight, bias = _init(classes, features.shape[1], init, seed, func)
    extra = {} if prior is None else dict(prior=as_prior(prior, "prior", func), alpha=alpha,
                                          remine_lambda=remine_lambda)
    fit = _C.lade_fit if loss else _C.crt_fit
    last = fit(features, labels, weight, bias, loss=loss, seed=seed, **sgd, **extra)
    return weight, bias, last


def crt(features, labels, classes=None, epochs=10, batch_size=512, lr=0.2, momentum=0.9, weight_decay=5e-4,
        sampling="class_balanced", seed=0, init=None):
    """cRT: a linear classifier re-trained on frozen features with class-balanced sampling and
    cross-entropy, from a fresh initialisation (or from `init` = (weight, bias)). The defaults are
    Kang et al.'s recipe (10 epochs, cosine learning rate). Returns a Classifier."""
    func = "lade.decoupled.crt"
    sgd = _sgd(func, epochs, batch_size, lr, momentum, weight_decay, sampling)
    weight, bias, last = _fit(func, features, labels, classes, init, seed, 0, None, 0, 0, sgd)
    return Classifier(weight, bias, info={"method": "cRT", "last_epoch_loss": last})


def instance_epochs(labels, epochs, classes=None, func="lade.decoupled.instance_epochs"):
    """The epochs of instance sampling that show the smallest class as many samples as `epochs` of
    class-balanced sampling do: epochs * ceil(mean class count / smallest class count) (classes
    without samples left out)."""
    counts = class_counts(labels, _classes(labels, classes, func))
    counts = counts[counts > 0]
    return _args.whole(epochs, func, "epochs", 1) * int(np.ceil(counts.mean() / counts.min()))


def lade_retrain(features, labels, prior, classes=None, alpha=LADE_DEFAULTS["alpha"],
                 remine_lambda=LADE_DEFAULTS["remine_lambda"], epochs=None, batch_size=512, lr=0.2, momentum=0.9,
                 weight_decay=5e-4, sampling="instance", seed=0, init=None):
    """The classifier re-trained with the LADE loss (LADE-CE + alpha * LADER, `prior` the training
    prior) on frozen features, instance sampling by default. Test-time form: logits + log p_t
    (lade.posthoc.lade_adjust). Returns a Classifier.

    epochs: default instance_epochs(labels, 10), cRT's 10 epochs in samples of the smallest class.
    Under instance sampling a tail class is seen in a fraction of the steps, so 10 epochs leave
    its weights short of the optimum and the classifier still favours the head classes as if it
    had kept the source prior (on synthetic imbalance-50 features: few-shot recall 0.41 after 10
    epochs, 0.80 after 100, cRT 0.74; on the features of a short CIFAR-10-LT-50 JPEG run, the three
    rarest classes 5.8 % after 10 epochs, 19.5 % after 140, cRT 28.5 %, top-1 24.1, 28.1 and 25.6 %;
    Balanced Softmax re-training, alpha = 0, behaves the same)."""
    func = "lade.decoupled.lade_retrain"
    if epochs is None:
        epochs = instance_epochs(labels, 10, classes, func)
    sgd = _sgd(func, epochs, batch_size, lr, momentum, weight_decay, sampling)
    if prior is None:
        raise ValueError(f"{func}: argument 'prior' (the training prior) is needed")
    weight, bias, last = _fit(func, features, labels, classes, init, seed, 1, prior, alpha, remine_lambda, sgd)
    return Classifier(weight, bias, info={"method": "LADE re-training", "last_epoch_loss": last})


def lws(features, labels, weight, bias=None, epochs=10, batch_size=512, lr=0.2, momentum=0.9, weight_decay=5e-4,
        sampling="class_balanced", seed=0, scales=None):
    """LWS: per-class scales of the fixed classifier learnt with class-balanced sampling and
    cross-entropy, starting from `scales` (default all 1). Returns a Classifier."""
    func = "lade.decoupled.lws"
    sgd = _sgd(func, epochs, batch_size, lr, momentum, weight_decay, sampling)
    rows = getattr(weight, "shape", (0,))[0]
    scales = np.ones(rows, np.float32) if scales is None else np.array(scales, dtype=np.float32, order="C")
    last = _C.lws_fit(features, labels, weight, bias, scales, seed=seed, **sgd)
    return Classifier(weight, bias, scales=scales, info={"method": "LWS", "last_epoch_loss": last})


def lws_loss(features, labels, weight, bias, scales, grad=None):
    """Mean cross-entropy of the scaled classifier over all rows and its gradient in `scales`:
    -> (value, grad (classes,))."""
    return _C.lws_loss(features, labels, weight, bias, scales, grad)


def tau_normalize_select(held_features, held_labels, weight, bias=None, taus=None):
    """tau-normalisation with tau chosen on a held-out set: the tau of `taus` (default DEFAULT_TAUS,
    0 to 2 by 0.1) whose classifier (weight rows divided by ||w_c||^tau, bias kept) has the best
    balanced accuracy (mean per-class top-1 over the classes present) on the held-out features; the
    first such tau on ties. Returns a Classifier whose info holds every tau's accuracy."""
    taus = DEFAULT_TAUS if taus is None else np.ascontiguousarray(taus, dtype=np.float32)
    acc, best = _C.tau_select(held_features, held_labels, taus, weight, bias)
    tau = float(taus[best])  # the float32 grid value, as used
    return Classifier(_C.tau_normalize(weight, tau), bias, tau=tau,
                      info={"method": "tau-normalisation", "taus": taus.tolist(), "held_out_balanced_accuracy":
                            acc.tolist()})


def logits(features, weight, bias=None, scales=None):
    """features @ weight.T + bias, each column c times scales[c] when scales are given."""
    out = _C.linear_forward(features, weight, bias)
    if scales is not None:
        if not isinstance(scales, np.ndarray) or scales.shape != (out.shape[1],):
            raise ValueError(f"lade.decoupled.logits: argument 'scales' must have shape ({out.shape[1]},), got "
                             f"{getattr(scales, 'shape', type(scales).__name__)}")
        out *= scales
    return out
