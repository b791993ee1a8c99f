"""The model zoo: finished 200-epoch runs kept as weights in the repository's ``zoo/`` folder
(the wheel does not ship it).

    lade.zoo.list()          the index: one dict per entry (name, config, headline numbers, files)
    lade.zoo.load(name)      a ZooModel: the network with the run's weights, its training counts
                             and prior, the test-time adjustment of its loss, its stored results

The root is the ``root`` argument, else the environment variable LADE_ZOO, else the ``zoo/``
folder of the checkout lade is imported from. An entry is a folder of files, each listed in
``index.json`` with its sha256 and size; ``load`` checks every one before using it, so a damaged,
truncated or missing file is a ZooError naming it, never a model with other weights.
"""
import builtins
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from lade import losses, posthoc
from lade.nn import CAUSAL_NORM_OPTIONS, ResNet18, ResNet32
from lade.priors import prior_from_counts

__all__ = ["ZooError", "ZooModel", "INDEX", "WEIGHTS", "ENTRY_FILES", "resolve_root", "list", "load", "file_digest"]

INDEX = "index.json"
INDEX_VERSION = 1
WEIGHTS = "weights.npz"  # every parameter and BN running statistic, float32, by state_dict name
# every entry holds these (lade.app.zoo_entries writes them from a finished run folder)
ENTRY_FILES = (WEIGHTS, "train_counts.npy", "config.yaml", "run.json", "metrics.jsonl", "final.json",
               "results.json")
_ARCHS = {"resnet32": ResNet32, "resnet18": ResNet18}


class ZooError(ValueError):
    """The zoo's index or an entry's file is missing, damaged or does not match the index."""


def resolve_root(root=None):
    """The zoo folder: `root`, else $LADE_ZOO, else <checkout>/zoo."""
    if root is not None:
        return Path(root)
    if os.environ.get("LADE_ZOO"):
        return Path(os.environ["LADE_ZOO"])
    return Path(__file__).resolve().parent.parent / "zoo"


def file_digest(path):
    """sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_index(folder):
    path = folder / INDEX
    if not path.is_file():
        raise ZooError(f"lade.zoo: no zoo index '{path}'; pass root=, set LADE_ZOO to a zoo folder, or use a "
                       f"checkout of lade that holds zoo/")
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ZooError(f"lade.zoo: '{path}' is not readable JSON ({e})") from e
    if not (isinstance(index, dict) and index.get("version") == INDEX_VERSION
            and isinstance(index.get("entries"), builtins.list)
            and all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in index["entries"])):
        raise ZooError(f"lade.zoo: '{path}': expected {{'version': {INDEX_VERSION}, 'entries': [{{'name': ...}}, "
                       f"...]}}, got {str(index)[:80]!r}")
    return index


def list(root=None):  # noqa: A001 (the zoo's own list, as in torch.hub.list)
    """The index's entries (dicts: name, config, dataset, imbalance, loss, seed, headline, files)."""
    return _read_index(resolve_root(root))["entries"]


class ZooModel:
    """A zoo entry, loaded. ``model`` is a lade ResNet in eval use; ``train_counts`` and
    ``source_prior`` are the run's training set; ``adjust(logits, target_prior)`` applies the
    test-time form of the run's loss (PC Softmax for softmax CE, f + log p_t for LADE, Balanced
    Softmax and Causal Norm, whose model gives the TDE logits; uniform target when target_prior is
    None); ``results`` is the report computed from these weights on the machine that trained them
    (``results['evaluated_on']`` names it)."""

    def __init__(self, name, path, entry, model, train_counts, config_text, results):
        self.name, self.path, self.entry = name, path, entry
        self.model, self.config_text, self.results = model, config_text, results
        self.train_counts = train_counts
        self.source_prior = prior_from_counts(train_counts)
        self.loss = entry["loss"]
        self.test_time_form = losses.test_time_form(self.loss)

    def adjust(self, logits, target_prior=None):
        """The run's test-time logits for `target_prior` (new array)."""
        if self.test_time_form == "pc":
            return posthoc.pc_adjust(logits, self.source_prior, target_prior)
        return posthoc.lade_adjust(logits, target_prior)

    def __repr__(self):
        return (f"ZooModel({self.name!r}, {self.entry['model']['arch']}, {self.model.num_classes} classes, "
                f"loss {self.loss!r})")


def _check_files(folder, entry):
    """Every file of the entry exists and has the index's size and sha256."""
    files = entry.get("files")
    if not isinstance(files, dict) or set(ENTRY_FILES) - set(files):
        raise ZooError(f"lade.zoo.load: the index entry {entry['name']!r} must list the files {', '.join(ENTRY_FILES)}, "
                       f"got {sorted(files) if isinstance(files, dict) else files!r}")
    for name, meta in files.items():
        path = folder / name
        if not path.is_file():
            raise ZooError(f"lade.zoo.load: the file '{path}' of zoo entry {entry['name']!r} is missing")
        size = path.stat().st_size
        if size != meta.get("bytes"):
            raise ZooError(f"lade.zoo.load: '{path}' has {size} bytes, the index says {meta.get('bytes')} "
                           f"(a damaged or replaced file)")
        digest = file_digest(path)
        if digest != meta.get("sha256"):
            raise ZooError(f"lade.zoo.load: '{path}' has sha256 {digest[:16]}..., the index says "
                           f"{str(meta.get('sha256'))[:16]}... (a damaged or replaced file)")


def load(name, root=None):
    """The zoo entry `name` as a ZooModel, after checking every file against the index."""
    folder_root = resolve_root(root)
    index = _read_index(folder_root)
    entries = {e["name"]: e for e in index["entries"]}
    if not isinstance(name, str) or name not in entries:
        raise ZooError(f"lade.zoo.load: argument 'name' must be one of the zoo's entries "
                       f"({', '.join(sorted(entries)) or 'none'}), got {name!r}")
    entry = entries[name]
    folder = folder_root / name
    _check_files(folder, entry)
    try:  # the digests matched, so an error here means the index or its writer is wrong
        spec = entry["model"]
        arch = _ARCHS[spec["arch"]]
        kwargs = {"variant": spec["variant"]} if arch is ResNet32 else {}
        # the classifier and its options (entries written before the Causal Norm classifier name none: linear)
        kwargs.update({k: spec[k] for k in ("classifier", *CAUSAL_NORM_OPTIONS) if k in spec})
        model = arch(spec["num_classes"], stem_stride=spec["stem_stride"], **kwargs)
        with np.load(folder / WEIGHTS, allow_pickle=False) as weights:
            model.load_state_dict({k: weights[k] for k in weights.files})
        counts = np.load(folder / "train_counts.npy", allow_pickle=False)
        config_text = (folder / "config.yaml").read_text()
        results = json.loads((folder / "results.json").read_text())
        return ZooModel(name, folder, entry, model, counts, config_text, results)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ZooError(f"lade.zoo.load: entry {name!r} in '{folder}' does not load ({type(e).__name__}: {e})") from e
