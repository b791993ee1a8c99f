"""Experiment configs: a YAML file records everything a training run depends on.

A config has five sections (see lade/app/configs/*.yaml for complete examples)::

    name: cifar100_lt_100_lade
    data:   {dataset, root, imbalance, profile, subset_seed, train_img_max, test_per_class, calib_fraction,
             calib_test_per_class, sampler}
    model:  {arch, variant, stem_stride, seed, classifier, <options of that classifier>}
    loss:   {name, <options of that loss>}
    optim:  {epochs, batch_size, lr, momentum, weight_decay, nesterov, schedule, warmup_epochs,
             warmup_start, milestones, lr_factor}
    run:    {seed, threads, num_workers, eval_every, eval_batch_size, distributed, sync_bn, precision}

Every key is checked before anything runs: an unknown key or a value of the wrong type
raises ConfigError naming the key (``optim.lr``). Missing keys take the defaults below, so a
config file may list only what differs; the run folder always stores the complete config.

Overrides (``optim.lr=0.1``) are applied explicitly by ``apply_overrides`` and returned as a
list of (key, old, new) for the caller to log; nothing on the command line changes a value
unless it is named there (the official code's command-line defaults silently replaced config
values, spec §7.5).
"""
import copy
import os
import re
from pathlib import Path

import yaml

from lade.losses import LADE_DEFAULTS
from lade.nn import CLASSIFIERS, PRECISIONS

__all__ = ["ConfigError", "DEFAULTS", "LOSS_OPTIONS", "CLASSIFIER_OPTIONS", "load", "validate", "apply_overrides",
           "resolve_path", "dump", "flatten", "builtin_names", "CONFIG_DIR", "default_data_root",
           "RESUME_SAFE_SECTIONS", "parse_yaml", "read_yaml", "differences"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A config key is unknown, missing or has a bad value; the message names it."""


class _YamlLoader(yaml.SafeLoader):
    """YAML 1.1 reads 5e-4 (no dot) as a string; here every decimal number is a number. A key given
    twice in one mapping is refused (PyYAML keeps the last one without a word)."""

    def construct_mapping(self, node, deep=False):
        first = {}  # key -> its line
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = self.construct_object(key_node, deep=deep), key_node.start_mark.line + 1
            try:
                if key in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} appears twice (lines {first[key]} and {line})", key_node.start_mark)
                first[key] = line
            except TypeError:  # an unhashable key: the base class names it
                continue
        return super().construct_mapping(node, deep=deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def parse_yaml(text):
    """yaml.safe_load, except that numbers like 5e-4 are numbers. Raises yaml.YAMLError."""
    return yaml.load(text, Loader=_YamlLoader)


# --- the schema ---------------------------------------------------------------------------
# Each leaf is (checker, default). Checkers raise ConfigError(key, message) via _fail.

def _fail(key, msg):
    raise ConfigError(f"lade config: key '{key}' {msg}")


def _int(lo=None, hi=None):
    def check(key, v):
        if isinstance(v, bool) or not isinstance(v, int):
            _fail(key, f"must be an integer, got {type(v).__name__} {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            _fail(key, f"must be in [{lo}, {'inf' if hi is None else hi}], got {v}")
        return v
    return check


def _float(lo=None, hi=None, lo_open=False):
    def check(key, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            _fail(key, f"must be a number, got {type(v).__name__} {v!r}")
        v = float(v)
        if v != v or v in (float("inf"), float("-inf")):
            _fail(key, f"must be finite, got {v}")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            _fail(key, f"must be {'>' if lo_open else '>='} {lo}, got {v}")
        if hi is not None and v > hi:
            _fail(key, f"must be <= {hi}, got {v}")
        return v
    return check


def _choice(*options):
    def check(key, v):
        if v not in options:
            _fail(key, f"must be one of {list(options)}, got {v!r}")
        return v
    return check


def _bool(key, v):
    if not isinstance(v, bool):
        _fail(key, f"must be true or false, got {type(v).__name__} {v!r}")
    return v


def _str(key, v):
    if not isinstance(v, str) or not v:
        _fail(key, f"must be a non-empty string, got {type(v).__name__} {v!r}")
    return v


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.,=+-]*")


def _name(key, v):
    """A run name becomes a folder name under runs/: one plain path component."""
    _str(key, v)
    if not _NAME.fullmatch(v) or len(v) > 200:
        _fail(key, f"must be a folder name of letters, digits and _ . , = + - (not starting with '.' or '-', "
                   f"no '/'), at most 200 characters, got {v!r}")
    return v


def _optional(check):
    def opt(key, v):
        return None if v is None else check(key, v)
    return opt


def _int_list(key, v):
    if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, int) or not 1 <= x <= MAX_EPOCHS
                                      for x in v):
        _fail(key, f"must be a list of positive integers, got {v!r}")
    if v != sorted(v):
        _fail(key, f"must be in increasing order, got {v!r}")
    return v


# Limits the C core applies (LADE_MAX_THREADS of lade_set_num_threads, LADE_MAX_LOADER_WORKERS of lade_loader_create;
# tests/test_defaults.py holds them equal), checked here so that a bad value stops the run before anything is written.
MAX_THREADS = 256
MAX_WORKERS = 256
MAX_BATCH = 1 << 20
MAX_SEED = 2**63 - 1
MAX_EPOCHS = 10**6
MAX_COUNT = 10**9

DEFAULTS = {
    "name": (_name, "run"),
    "data": {
        "dataset": (_choice("cifar100", "cifar10", "listfile", "imagefolder"), "cifar100"),
        # listfile: data.train / data.test (/ data.val) are list files of "relative/path label" lines
        # (ImageNet-LT format), paths under data.image_root (default: the list file's folder);
        # imagefolder: they are class-folder trees. Relative paths are under the data root.
        "train": (_optional(_str), None),
        "test": (_optional(_str), None),
        "val": (_optional(_str), None),        # a labelled held-out set (calibration, EM, BBSE)
        "image_root": (_optional(_str), None),
        "resolution": (_int(8, 1024), 32),     # training crop and evaluation size of file datasets
        "lt_subset": (_bool, True),            # file datasets: CIFAR-LT profile subset (true) or the list as given
        "root": (_optional(_str), None),          # None: <repo>/../shared/data
        "imbalance": (_float(1.0, 1e15), 100.0),         # head count / tail count (ratio = 1 / imbalance)
        "profile": (_choice("exp", "step"), "exp"),
        "subset_seed": (_int(0, MAX_SEED), 1),               # which images form the long-tailed subset
        "train_img_max": (_optional(_int(1, MAX_COUNT)), None),  # head-class count; None: 50000 / classes
        "test_per_class": (_optional(_int(1, MAX_COUNT)), None),  # first k test images per class; None: all
        "calib_fraction": (_float(0.0, 1.0), 0.2),  # held-out source set from unused train images
        # held-out set from the TEST split instead: the last k test images of each class (balanced,
        # disjoint from the first test_per_class evaluated); None: use calib_fraction
        "calib_test_per_class": (_optional(_int(1, MAX_COUNT)), None),
        # the order of the training images each epoch (lade.sampling): instance (a shuffle), class_aware,
        # square_root or progressive (progressively balanced over optim.epochs)
        "sampler": (_choice("instance", "class_aware", "square_root", "progressive"), "instance"),
    },
    "model": {
        # resnet32 (CIFAR, 16/32/64 channels) or resnet18 (torchvision's layout, 64..512 channels)
        "arch": (_choice("resnet32", "resnet18"), "resnet32"),
        "variant": (_choice("lade", "classic"), "lade"),  # resnet32 only
        # downsampling of the stem: 1 (3x3, 32 px images), 2 (3x3 stride 2, e.g. 64 px),
        # 4 (7x7 stride 2 and a stride-2 max pool: torchvision's stem, 112 px and up)
        "stem_stride": (_choice(1, 2, 4), 1),
        "seed": (_int(0, MAX_SEED), 0),
        # linear (fc with bias) or causal_norm (Tang et al. 2020, spec §1.7; trained with loss.name causal_norm)
        "classifier": (_choice(*CLASSIFIERS), "linear"),
    },
    "loss": {
        "name": (_choice("softmax_ce", "balanced_softmax", "lade", "logit_adjusted", "focal", "class_balanced",
                         "ldam_drw", "causal_norm"), "softmax_ce"),
    },
    "optim": {
        "epochs": (_int(1, MAX_EPOCHS), 200),
        "batch_size": (_int(1, MAX_BATCH), 256),
        "lr": (_float(0.0, lo_open=True), 0.2),
        "momentum": (_float(0.0, 1.0), 0.9),
        "weight_decay": (_float(0.0), 5e-4),
        "nesterov": (_bool, False),
        "schedule": (_choice("warmup_multistep", "cosine", "constant"), "warmup_multistep"),
        "warmup_epochs": (_int(0, MAX_EPOCHS), 5),
        "warmup_start": (_float(0.0, 1.0), 1.0 / 3.0),
        "milestones": (_int_list, [120, 160]),
        "lr_factor": (_float(0.0, 1.0, lo_open=True), 0.01),
    },
    "run": {
        "seed": (_int(0, MAX_SEED), 1),                      # data order / augmentation stream
        "threads": (_int(1, MAX_THREADS), 2),
        "num_workers": (_int(1, MAX_WORKERS), 2),
        "eval_every": (_int(0, MAX_EPOCHS), 0),                # test top-1 every N epochs (0: only at the end)
        "eval_batch_size": (_int(1, MAX_BATCH), 500),
        # mpi: data-parallel over the ranks of `mpirun -np N python -m lade train ...` (lade.distributed);
        # optim.batch_size is the global batch, each rank trains on batch_size / N of it
        "distributed": (_choice("none", "mpi"), "none"),
        # with run.distributed=mpi: batch norm over the global batch (one small all-reduce per BN layer
        # forward and backward) instead of per rank, the official code's way
        "sync_bn": (_bool, False),
        # the training convolutions': float32, or bf16 (bfloat16 products, float32 sums; parameters, batch
        # norm, loss and SGD stay float32; lade.ResNet32's precision). bf16 on a CPU without AVX512-BF16
        # stops the run with an error naming this key, never a silent float32 run
        "precision": (_choice(*PRECISIONS), PRECISIONS[0]),
    },
}

# Options of each loss beyond its name; the training prior / counts are supplied by the run.
LOSS_OPTIONS = {
    "softmax_ce": {},
    "balanced_softmax": {},
    "lade": {"alpha": (_float(0.0), LADE_DEFAULTS["alpha"]),
             "remine_lambda": (_float(0.0), LADE_DEFAULTS["remine_lambda"]),
             "form": (_choice("official", "paper"), "official")},
    "logit_adjusted": {"tau": (_float(0.0), 1.0)},
    "focal": {"gamma": (_float(0.0), 2.0)},
    "class_balanced": {"beta": (_float(0.0, 1.0), 0.9999), "base": (_choice("softmax", "focal"), "softmax"),
                       "gamma": (_float(0.0), 1.0)},
    "ldam_drw": {"drw_epoch": (_int(0, MAX_EPOCHS), 160), "beta": (_float(0.0, 1.0), 0.9999),
                 "max_margin": (_float(0.0, lo_open=True), 0.5), "s": (_float(0.0, lo_open=True), 30.0)},
    "causal_norm": {},  # plain CE on the Causal Norm classifier's logits
}

# Options of each model.classifier (the arguments of lade.ResNet32 / ResNet18 beside `classifier`); the
# Causal Norm values are the CIFAR recipe's (spec §5.1): 2 heads, tau 16, gamma 1/32, TDE alpha 1.5 and
# the running feature mean's momentum 0.9 (the reference uses alpha 3.0 on ImageNet-LT, Places-LT and iNat).
CLASSIFIER_OPTIONS = {
    "linear": {},
    "causal_norm": {"heads": (_int(1, MAX_COUNT), 2), "tau": (_float(0.0, lo_open=True), 16.0),
                    "gamma": (_float(0.0), 0.03125), "alpha": (_float(0.0), 1.5),
                    "mean_momentum": (_float(0.0, 1.0), 0.9)},
}
# The option tables by section: the key naming the choice, and the options of each choice.
_CHOICE_OPTIONS = {"loss": ("name", LOSS_OPTIONS), "model": ("classifier", CLASSIFIER_OPTIONS)}

# Keys that may differ when a run is resumed: they change speed or logging, not the recipe. The thread
# count changes the order of some float sums, so a run resumed with another one matches neither thread
# count to the bit (only to float32 precision); run.json records each session's count.
RESUME_SAFE_SECTIONS = ("run.threads", "run.num_workers", "run.eval_every", "run.eval_batch_size")


def _chosen(cfg, section):
    """The value of the section's choice key (loss.name, model.classifier), its default when absent."""
    key = _CHOICE_OPTIONS[section][0]
    part = cfg.get(section) if isinstance(cfg, dict) else None
    return part.get(key, DEFAULTS[section][key][1]) if isinstance(part, dict) else DEFAULTS[section][key][1]


def _schema_for(cfg):
    schema = copy.deepcopy(DEFAULTS)
    for section, (_, options) in _CHOICE_OPTIONS.items():
        chosen = _chosen(cfg, section)
        if chosen in options:
            schema[section].update(options[chosen])
    return schema


def _check_pairing(cfg):
    """The Causal Norm classifier and its loss go together: the loss's test-time form and the report's
    names (Causal Norm, PC Causal Norm) say what the classifier is."""
    classifier, loss = cfg["model"]["classifier"], cfg["loss"]["name"]
    if (classifier == "causal_norm") != (loss == "causal_norm"):
        if loss == "causal_norm":
            _fail("loss.name", f"causal_norm (plain CE on the Causal Norm classifier) needs model.classifier "
                               f"causal_norm, got {classifier!r}")
        _fail("model.classifier", f"causal_norm is trained with loss.name causal_norm (plain CE, spec §1.7), "
                                  f"got loss.name {loss!r}")


def validate(cfg):
    """Returns the complete config (defaults filled in, numbers normalised) or raises ConfigError."""
    out = _validate_keys(cfg)
    _check_pairing(out)
    return out


def _validate_keys(cfg):
    """validate, except for the pairing of keys of two sections (_check_pairing)."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"lade config: the top level must be a mapping, got {type(cfg).__name__}")
    schema = _schema_for(cfg)
    out = {}
    for key in cfg:
        if key not in schema:
            _fail(key, f"is not a known key (known: {', '.join(schema)})")
    for key, spec in schema.items():
        if isinstance(spec, dict):
            section = cfg.get(key, {})
            if section is None:
                section = {}
            if not isinstance(section, dict):
                _fail(key, f"must be a mapping, got {type(section).__name__}")
            for sub in section:
                if sub not in spec:
                    hint = ""
                    if key in _CHOICE_OPTIONS:
                        hint = f" for {key}.{_CHOICE_OPTIONS[key][0]} '{_chosen(cfg, key)}'"
                    _fail(f"{key}.{sub}", f"is not a known key{hint} (known: {', '.join(spec)})")
            out[key] = {}
            for sub, (check, default) in spec.items():
                value = section[sub] if sub in section else copy.deepcopy(default)
                out[key][sub] = check(f"{key}.{sub}", value)
        else:
            check, default = spec
            out[key] = check(key, cfg[key] if key in cfg else default)
    return out


def builtin_names():
    """Names of the configs shipped in lade/app/configs/ (without .yaml)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_path(name_or_path):
    """A path to an existing YAML file, or the shipped config of that name."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or os.sep in str(name_or_path):
        if not p.is_file():
            raise ConfigError(f"lade config: file '{name_or_path}' does not exist")
        return p
    builtin = CONFIG_DIR / f"{name_or_path}.yaml"
    if not builtin.is_file():
        raise ConfigError(f"lade config: '{name_or_path}' is neither a YAML file nor a shipped config "
                          f"(shipped: {', '.join(builtin_names())})")
    return builtin


def read_yaml(path, who="lade config"):
    """The YAML file `path` parsed by parse_yaml; ConfigError naming `who` and the file when it is not
    UTF-8 text or not valid YAML (a key given twice included)."""
    try:
        return parse_yaml(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{who}: '{path}' is not a UTF-8 text file (byte {e.start} is {e.object[e.start]:#04x}); "
                          f"expected YAML") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{who}: '{path}' is not valid YAML ({e})") from None


def load(name_or_path):
    """Reads and validates a config file or a shipped config name."""
    path = resolve_path(name_or_path)
    raw = read_yaml(path)
    try:
        return validate(raw if raw is not None else {})
    except ConfigError as e:
        raise ConfigError(f"{e} (in '{path}')") from None


def apply_overrides(cfg, overrides):
    """Applies 'section.key=value' strings (values parsed as YAML scalars/lists) and validates.

    Returns (new_cfg, changes) with changes a list of (key, old, new). A key that does not exist
    in the schema is rejected, as is a malformed override."""
    cfg = copy.deepcopy(cfg)
    changes = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"lade config: override '{item}' must have the form key=value (e.g. optim.lr=0.1)")
        key, text = item.split("=", 1)
        key = key.strip()
        try:
            value = parse_yaml(text) if text.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"lade config: override for key '{key}' has an unreadable value {text!r} ({e})") from None
        parts = key.split(".")
        if len(parts) == 1:
            if parts[0] not in DEFAULTS or isinstance(DEFAULTS[parts[0]], dict):
                _fail(key, "is not a known key (use section.key, e.g. optim.lr)")
            old = cfg.get(parts[0])
            cfg[parts[0]] = value
        elif len(parts) == 2:
            section, sub = parts
            if section not in DEFAULTS or not isinstance(DEFAULTS[section], dict):
                _fail(key, "is not a known key")
            choice, options = _CHOICE_OPTIONS.get(section, (None, None))
            if sub == choice and value != cfg[section].get(sub):
                # another loss (classifier) has other options: drop the old one's
                old_options = options.get(cfg[section].get(sub), {})
                cfg[section] = {k: v for k, v in cfg[section].items() if k not in old_options}
            old = cfg[section].get(sub)
            cfg[section][sub] = value
        else:
            _fail(key, "is not a known key (at most one dot: section.key)")
        cfg = _validate_keys(cfg)  # the pairing once all are applied: it may take two overrides to change
        changes.append((key, old, value))
    _check_pairing(cfg)
    return cfg, changes


def flatten(cfg, prefix=""):
    """{'optim.lr': 0.2, ...}"""
    flat = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def differences(a, b, ignore=()):
    """Sorted dotted keys whose values differ between two configs, compared key by key."""
    fa, fb = flatten(a), flatten(b)
    return sorted(k for k in set(fa) | set(fb) if k not in ignore and fa.get(k) != fb.get(k))


def dump(cfg):
    """YAML text of a config, sections in schema order."""
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False)


def default_data_root():
    """<repository root>/../shared/data, the repository root being the folder holding lade/."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"
