"""Layers, ResNet models, SGD and learning-rate schedules.

The math is in C (csrc/include/lade_nn.h). Layer functions take float32 NCHW arrays
and use them in place: forward outputs passed as ``out`` are overwritten,
gradient arrays passed to a backward are accumulated into (+=), and outputs
not given are allocated (gradients zero-filled). An output must not share
memory with another argument (ValueError); only the elementwise forwards
(relu_forward, add_forward) accept out=x exactly, computing in place.
"""
import math

import numpy as np

from lade import _C, _args
from lade._C import (  # noqa: F401  (re-exported layer API)
    add_backward,
    add_forward,
    batchnorm2d_backward,
    batchnorm2d_forward_eval,
    batchnorm2d_forward_train,
    causal_norm_backward,
    causal_norm_forward,
    concat_backward,
    concat_forward,
    conv2d_backward,
    conv2d_forward,
    cosine_lr,
    global_avgpool_backward,
    global_avgpool_forward,
    linear_backward,
    linear_forward,
    maxpool2d_backward,
    maxpool2d_forward,
    relu_backward,
    relu_forward,
    shortcut_a_backward,
    shortcut_a_forward,
    warmup_multistep_lr,
)

_VARIANTS = {"lade": 0, "classic": 1}  # lade_resnet_variant; 2 is ResNet-18
_RESNET18 = 2
# stem_stride -> lade_stem: 3x3 stride 1, 3x3 stride 2, 7x7 stride 2 + 3x3 stride-2 max pool
_STEMS = {1: 0, 2: 1, 4: 2}
# PyTorch keeps this counter in every BatchNorm's state_dict; lade does not need it.
_IGNORED_SUFFIX = ".num_batches_tracked"
CLASSIFIERS = ("linear", "causal_norm")
# the Causal Norm classifier's values (csrc/include/lade_nn.h, lade_causal_norm_config); no defaults here:
# the CIFAR recipe's (spec §5.1) are lade.app.config's
CAUSAL_NORM_OPTIONS = ("heads", "tau", "gamma", "alpha", "mean_momentum")
# precision of the training-mode convolutions (lade_nn.h, lade_resnet_set_precision); the first is the default
PRECISIONS = ("float32", "bf16")


def _causal_norm_options(func, classifier, options):
    """The Causal Norm values for the C core ({} for the linear classifier), checked for presence and type
    (the core checks their ranges)."""
    if classifier not in CLASSIFIERS:
        raise ValueError(f"{func}: argument 'classifier' must be one of {list(CLASSIFIERS)}, got {classifier!r}")
    given = {k: v for k, v in options.items() if v is not None}
    if classifier == "linear":
        if given:
            raise ValueError(f"{func}: argument '{sorted(given)[0]}' is an option of classifier='causal_norm', "
                             f"got it with classifier='linear'")
        return {}
    missing = [k for k in CAUSAL_NORM_OPTIONS if k not in given]
    if missing:
        raise TypeError(f"{func}: classifier='causal_norm' needs the argument '{missing[0]}' (all of "
                        f"{', '.join(CAUSAL_NORM_OPTIONS)}; lade.app.config has the CIFAR recipe's), got None")
    return {k: _args.whole(v, func, k, 1) if k == "heads" else _args.real(v, func, k) for k, v in given.items()}


def _checked(func, arg, value, shape, variance=False):
    """`value` as an array of `shape` holding finite real numbers (non-negative with `variance`), else a
    named error; checked before anything is copied into a model."""
    try:
        value = np.asarray(value)
    except Exception as e:
        raise TypeError(f"{func}: argument '{arg}' is not an array ({e})") from None
    if value.shape != shape:
        raise ValueError(f"{func}: argument '{arg}' must have shape {shape}, got {value.shape}")
    if value.dtype.kind not in "fiu":
        raise TypeError(f"{func}: argument '{arg}' must hold real numbers, got dtype {value.dtype}")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{func}: argument '{arg}' contains NaN or Inf")
    if variance and (value < 0).any():
        raise ValueError(f"{func}: argument '{arg}' has a negative variance {value.min()}")
    return value


def _flat_property(name, doc):
    """A flat C buffer as a zero-copy view. Assigning copies into it (the model computes from that
    memory, so rebinding the attribute would leave the weights unchanged), after the checks of
    load_state_dict."""
    def get(self):
        return self._flat[name]

    def set(self, value):
        target = self._flat[name]
        func = f"lade.{type(self).__name__}.{name}"
        value = _checked(func, name, value, target.shape)
        if name == "buffers":
            for key, view in self._views(value, True).items():
                if key.endswith("running_var"):
                    _checked(func, f"{name}[{key!r}]", view, view.shape, variance=True)
        target[...] = value
    return property(get, set, doc=doc)


class _ResNet:
    """What every C ResNet shares: flat ``params``, ``grads`` and ``buffers``
    (zero-copy float32 views of the C buffers) named like the PyTorch modules'
    state_dict, forward and backward, profiling."""

    params = _flat_property("params", "All weights, float32 (num_params,); `net.params = a` copies `a` in.")
    grads = _flat_property("grads", "All gradients, float32 (num_params,); assigning copies in.")
    buffers = _flat_property("buffers", "BN running statistics, float32; assigning copies in.")

    def _create(self, code, num_classes, stem_stride, seed, classifier, causal_norm, precision):
        func = f"lade.{type(self).__name__}"
        if precision not in PRECISIONS:
            raise ValueError(f"{func}: argument 'precision' must be one of {list(PRECISIONS)}, got {precision!r}")
        self.num_classes = _args.whole(num_classes, func, "num_classes", 1, _args.MAX_CLASSES)
        if stem_stride not in _STEMS:
            raise ValueError(f"{func}: argument 'stem_stride' must be one of {sorted(_STEMS)}, got {stem_stride!r}")
        self.stem_stride = stem_stride
        options = _causal_norm_options(func, classifier, causal_norm)
        self.classifier = classifier
        self.causal_norm = options or None  # the Causal Norm values, None for the linear classifier
        self._core = _C.ResNetCore(code, _STEMS[stem_stride], self.num_classes, **options)
        self._flat = {"params": self._core.params, "grads": self._core.grads, "buffers": self._core.buffers}
        self._layout = self._core.tensors()  # [(name, is_buffer, offset, shape)]
        self.feature_dim = {name: shape for name, _, _, shape in self._layout}["fc.weight"][1]
        self.precision = precision
        self.init(seed)

    @property
    def precision(self):
        """Precision of the training-mode convolutions, forward and backward: "float32", or "bf16"
        (bfloat16 products with float32 sums in the 3x3 stride-1 convolutions, the rest float32;
        parameters, gradients, batch norm, the classifier, the loss, the optimiser and eval-mode
        forwards stay float32). "bf16" needs a CPU with AVX512-BF16 (ValueError naming the CPU
        otherwise; the kernel variant "bf16_emulated", ``lade.set_isa``, runs it anywhere, slowly,
        for tests). Settable."""
        return self._precision

    @precision.setter
    def precision(self, value):
        if value not in PRECISIONS:
            raise ValueError(f"lade.{type(self).__name__}.precision must be one of {list(PRECISIONS)}, "
                             f"got {value!r}")
        self._core.set_precision(value)
        self._precision = value

    def init(self, seed):
        """(Re)initialise weights and BN statistics from ``seed`` (bit-identical for equal seeds)."""
        self._core.init(seed)  # C checks it is in [0, 2^64)

    def _views(self, flat, want_buffers):
        views = {}
        for name, is_buffer, offset, shape in self._layout:
            if bool(is_buffer) == want_buffers:
                size = math.prod(shape)
                views[name] = flat[offset:offset + size].reshape(shape)
        return views

    def parameters(self):
        """dict name -> shaped view into ``params``."""
        return self._views(self.params, False)

    def gradients(self):
        """dict name -> shaped view into ``grads``."""
        return self._views(self.grads, False)

    def running_stats(self):
        """dict name -> shaped view into ``buffers`` (BN running mean and variance; with the Causal Norm
        classifier also its running feature mean ``fc.feature_mean``)."""
        return self._views(self.buffers, True)

    def state_dict(self):
        """dict name -> NumPy copy of every parameter and running statistic."""
        state = {k: v.copy() for k, v in self.parameters().items()}
        state.update({k: v.copy() for k, v in self.running_stats().items()})
        return state

    def load_state_dict(self, state):
        """Copy weights from a dict of arrays (NumPy, or anything np.asarray takes, e.g. a
        PyTorch state_dict's tensors after ``.numpy()``). Keys must match exactly, except
        PyTorch's ``num_batches_tracked`` counters, which are ignored."""
        targets = self.parameters()
        targets.update(self.running_stats())
        func = f"lade.{type(self).__name__}.load_state_dict"
        if not hasattr(state, "items"):
            raise TypeError(f"{func}: argument 'state' must be a dict of arrays, got {type(state).__name__}")
        given = {k: v for k, v in state.items() if not (isinstance(k, str) and k.endswith(_IGNORED_SUFFIX))}
        missing = sorted(set(targets) - set(given))
        unexpected = sorted(set(given) - set(targets))
        if missing or unexpected:
            raise KeyError(f"{func}: argument 'state' does not match the model: "
                           f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                           f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
        # every tensor is checked before the first is copied: a bad one leaves the model unchanged
        values = {name: _checked(func, f"state[{name!r}]", given[name], target.shape, name.endswith("running_var"))
                  for name, target in targets.items()}
        for name, target in targets.items():
            target[...] = values[name]

    def forward(self, images, train=True, out=None, defer_running_stats=False):
        """Logits (n, num_classes) for float32 images (n, 3, h, w). In training mode
        batch statistics are used and the running statistics updated (unless
        deferred, see ``commit_running_stats``). With the Causal Norm classifier,
        eval mode gives the TDE logits (the running feature mean's direction removed)."""
        return self._core.forward(images, train, defer_running_stats, out)

    __call__ = forward

    def commit_running_stats(self):
        """Apply the running-statistics update (BN, Causal Norm's feature mean) deferred by the last
        training forward."""
        self._core.commit_running_stats()

    def backward(self, dlogits):
        """grads += d loss / d params, for the last training forward; dlogits is (n, num_classes)."""
        self._core.backward(dlogits)

    def zero_grad(self):
        self._core.zero_grad()

    def set_bn_reducer(self, reducer):
        """Synchronised batch norm for data-parallel training: every later training forward and
        backward calls ``reducer(buf)`` for every batch norm, with ``buf`` a float64 view (zero-copy)
        of that layer's per-channel sums (forward, two calls: the sum of x and the count, then the sum
        of (x - mean)^2; backward: the sums of dy and of dy * xhat, csrc/include/lade_nn.h; with the Causal
        Norm classifier also, once per training forward, the sums of the features and the image count),
        which it must replace by their sum over all replicas, in place, and
        return None (e.g. ``lade.distributed.BatchNormSum``). Each replica then normalises with the
        statistics of the whole global batch and all hold the same running statistics; gamma and
        beta keep each replica's share of their gradient, summed with the other gradients. An
        exception in ``reducer`` fails the forward or backward (RuntimeError, the exception as its
        cause) before anything is committed. ``None`` (the default) keeps per-replica statistics."""
        self._core.set_bn_reducer(reducer)

    @property
    def features(self):
        """A copy of the pooled features (n, feature_dim) of the last forward."""
        return self._core.features()

    def profile(self):
        """Seconds per layer kind since the last ``profile_reset``."""
        return self._core.profile()

    def conv_profile(self):
        """Per convolution (stem first, then each block's conv1, conv2): its name,
        shape, seconds forward and backward since ``profile_reset`` and flops per
        image (forward; backward = input + weight gradients) at the last input size."""
        return self._core.conv_profile()

    def profile_reset(self):
        self._core.profile_reset()

    @property
    def num_params(self):
        return self.params.size


class ResNet32(_ResNet):
    """A CIFAR ResNet-32 whose weights live in C.

    variant="lade": the BBN variant used by LADE (5/5/4 blocks plus cb_block and
    rb_block concatenated to a 128-d feature); variant="classic": 5/5/5 blocks,
    64-d feature. 16/32/64 channels, option-A shortcuts. ``stem_stride`` 1 is the
    CIFAR stem (3x3, for 32 px), 2 a 3x3 stride-2 stem (e.g. for 64 px), 4 a 7x7
    stride-2 conv and a 3x3 stride-2 max pool.

    ``classifier="linear"``: fc with bias. ``classifier="causal_norm"``: the Causal
    Norm classifier (Tang et al. 2020, spec §1.7), which needs all of ``heads``,
    ``tau``, ``gamma`` (weight norm offset), ``alpha`` (TDE strength) and
    ``mean_momentum``: ``heads`` cosine heads over slices of the feature, logits
    ``tau / heads`` times their sum, no bias; the running feature mean (buffer
    ``fc.feature_mean``) moves as ``mean_momentum * mean + batch mean`` at every
    training step; eval-mode logits are the TDE ones.

    ``precision``: "float32" or "bf16", the training convolutions' (the ``precision`` property).
    """

    def __init__(self, num_classes=100, variant="lade", seed=0, stem_stride=1, classifier="linear", heads=None,
                 tau=None, gamma=None, alpha=None, mean_momentum=None, precision="float32"):
        if variant not in _VARIANTS:
            raise ValueError(f"lade.ResNet32: argument 'variant' must be one of {sorted(_VARIANTS)}, got {variant!r}")
        self.variant = variant
        self._create(_VARIANTS[variant], num_classes, stem_stride, seed, classifier,
                     dict(heads=heads, tau=tau, gamma=gamma, alpha=alpha, mean_momentum=mean_momentum), precision)


class ResNet18(_ResNet):
    """A ResNet-18 (torchvision's layout and state_dict names: conv1, bn1,
    layer1.0.conv1, ..., layer2.0.downsample.0/1, fc) whose weights live in C:
    64/128/256/512 channels, two basic blocks per stage, 1x1 conv + BN projection
    shortcuts where the shape changes, 512-d feature. ``stem_stride`` 1: a 3x3
    stride-1 stem (32 px images); 2: 3x3 stride 2; 4: torchvision's ImageNet stem,
    7x7 stride 2 and a 3x3 stride-2 max pool (112 px and up). ``classifier`` and its
    options and ``precision`` as for ResNet32.
    """

    def __init__(self, num_classes=100, seed=0, stem_stride=4, classifier="linear", heads=None, tau=None, gamma=None,
                 alpha=None, mean_momentum=None, precision="float32"):
        self.variant = "resnet18"
        self._create(_RESNET18, num_classes, stem_stride, seed, classifier,
                     dict(heads=heads, tau=tau, gamma=gamma, alpha=alpha, mean_momentum=mean_momentum), precision)


class SGD:
    """SGD with PyTorch's semantics: d = g + wd*p; v = m*v + (1-dampening)*d (v = d
    on the first step); d = d + m*v if nesterov else v; p -= lr*d. Weight decay
    applies to every parameter unless ``decay_mask`` (float32, 1 = decay) says otherwise."""

    def __init__(self, model, lr, momentum=0.9, weight_decay=5e-4, dampening=0.0, nesterov=False, decay_mask=None):
        lr, momentum, weight_decay, dampening = (_args.real(value, "lade.SGD", name, 0.0) for name, value in
                                                 (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay),
                                                  ("dampening", dampening)))
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("lade.SGD: argument 'nesterov' needs momentum > 0 and dampening 0")
        self.model = model
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.dampening = float(dampening)
        self.nesterov = bool(nesterov)
        self.decay_mask = decay_mask
        self.velocity = np.zeros_like(model.params)
        self.steps = 0

    def step(self, lr=None):
        """One update of ``model.params`` from ``model.grads``. Raises FloatingPointError,
        changing nothing, if a gradient is not finite."""
        lr = self.lr if lr is None else _args.real(lr, "lade.SGD.step", "lr", 0.0)
        _C.sgd_step(self.model.params, self.model.grads, self.velocity, lr, self.momentum, self.dampening,
                    self.weight_decay, self.nesterov, self.steps == 0, self.decay_mask)
        self.lr = lr  # only after a successful step: a refused one changes nothing
        self.steps += 1

    def state_dict(self):
        return {"velocity": self.velocity.copy(), "steps": self.steps, "lr": self.lr}

    def load_state_dict(self, state):
        func = "lade.SGD.load_state_dict"
        missing = {"velocity", "steps", "lr"} - set(state)
        if missing:
            raise KeyError(f"{func}: argument 'state' lacks {sorted(missing)}")
        velocity = np.asarray(state["velocity"])
        if velocity.shape != self.velocity.shape:
            raise ValueError(f"{func}: argument 'state[\"velocity\"]' must have shape "
                             f"{self.velocity.shape}, got {velocity.shape}")
        if velocity.dtype.kind not in "fiu" or not np.isfinite(velocity).all():
            raise ValueError(f"{func}: argument 'state[\"velocity\"]' must hold finite numbers")
        steps = _args.whole(state["steps"], func, "state['steps']", 0, None)
        lr = _args.real(state["lr"], func, "state['lr']", 0.0)
        self.velocity[...] = velocity
        self.steps, self.lr = steps, lr


def train_step(model, optimizer, images, labels, loss=None, lr=None, grad=None, reduce_gradients=None,
               return_logits=False):
    """One SGD step: forward (train mode), loss, backward, update. Returns the loss, or
    ``(loss, logits)`` with ``return_logits=True`` (the batch's training-mode logits, e.g. to
    count correct predictions; a fresh array the caller owns).

    ``loss`` is a callable ``loss(logits, labels, grad) -> (value, grad)`` over the
    whole batch (default: softmax cross-entropy). ``reduce_gradients`` (optional) is
    called as ``reduce_gradients(model.grads)`` after backward and before the optimiser
    step and must update that flat float32 gradient buffer in place (e.g. average it over
    data-parallel processes). A non-finite loss or gradient raises FloatingPointError
    before the weights, the optimiser state or the BN running statistics change: the
    statistics of this batch are committed only once the update has been made."""
    if loss is None:
        from lade.losses import softmax_ce as loss
    logits = model.forward(images, train=True, defer_running_stats=True)
    value, dlogits = loss(logits, labels, grad)
    if not math.isfinite(value):
        raise FloatingPointError(f"lade.train_step: the loss is {value}; the step was not taken")
    model.zero_grad()
    model.backward(dlogits)
    if reduce_gradients is not None:
        reduce_gradients(model.grads)
    optimizer.step(lr)
    model.commit_running_stats()
    return (float(value), logits) if return_logits else float(value)


def predict(model, images, batch_size=256, out=None):
    """Eval-mode logits for all ``images``, computed ``batch_size`` at a time."""
    func = "lade.predict"
    batch_size = _args.whole(batch_size, func, "batch_size", 1)
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise TypeError(f"{func}: argument 'images' must be a float32 ndarray (n, 3, h, w), got "
                        f"{type(images).__name__} {getattr(images, 'shape', '')}")
    n = len(images)
    if out is None:
        out = np.empty((n, model.num_classes), dtype=np.float32)
    elif out.shape != (n, model.num_classes):
        raise ValueError(f"lade.predict: argument 'out' must have shape {(n, model.num_classes)}, got {out.shape}")
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        model.forward(images[start:stop], train=False, out=out[start:stop])
    return out


__all__ = [
    "ResNet32", "ResNet18", "SGD", "train_step", "predict", "warmup_multistep_lr", "cosine_lr",
    "conv2d_forward", "conv2d_backward", "batchnorm2d_forward_train", "batchnorm2d_forward_eval",
    "batchnorm2d_backward", "relu_forward", "relu_backward", "add_forward", "add_backward",
    "concat_forward", "concat_backward", "global_avgpool_forward", "global_avgpool_backward",
    "maxpool2d_forward", "maxpool2d_backward", "shortcut_a_forward", "shortcut_a_backward",
    "linear_forward", "linear_backward", "causal_norm_forward", "causal_norm_backward",
]
