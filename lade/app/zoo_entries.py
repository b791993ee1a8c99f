"""Writing the model zoo and evaluating its entries (the library's reader is lade.zoo).

    add_run(run_dir)            a finished run folder -> zoo/NAME (weights, config, logs, results) and
                                its row in zoo/index.json
    materialize(name, out_dir)  a zoo entry -> a finished run folder whose logits are recomputed from
                                the weights, so every report of lade.app.report works on it unchanged
    refresh_results(name)       an entry's results.json computed again from its weights, when the report
                                has gained a table since the entry was added

An entry's name is the config's name and seed (``cifar100_lt_100_lade_seed1``). Its results.json is
the run's full report (every table, the estimated-prior one included), computed once from the run's
logits on the machine that trained it and stamped with that machine's CPU and kernel variant.
"""
import json
import tempfile
from pathlib import Path

import numpy as np

import lade
from lade import nn, zoo
from lade.app import config as config_mod
from lade.app import evaluation, training
from lade.app.datasets import load_dataset
from lade.app.runs import (RUN_MARKER, RunError, check_output_dir, load_checkpoint, run_status, save_atomic, save_npy,
                           source_commit)

__all__ = ["entry_name", "add_run", "materialize", "refresh_results", "ZOO_PREFIX"]

ZOO_PREFIX = "zoo:"  # `lade evaluate zoo:NAME`
# final.json last: a folder is a finished run once it is there
_COPIED = ("config.yaml", "run.json", "metrics.jsonl", "train_counts.npy", "final.json")
_ENTRY_BUDGET = 2_500_000  # bytes an entry may take (issue 24): the whole zoo stays under 45 MB


def entry_name(cfg):
    """The zoo name of a run of `cfg`: its config name, its precision unless float32 (a bf16 run is its own
    entry, never a replacement of the float32 one), and its seed."""
    precision = cfg["run"]["precision"]
    return f"{cfg['name']}{'' if precision == 'float32' else '_' + precision}_seed{cfg['run']['seed']}"


def _model_spec(cfg, classes):
    """What lade.zoo.load builds the network from: the architecture and the classifier with its options."""
    m = cfg["model"]
    spec = {"arch": m["arch"], "variant": m["variant"], "num_classes": int(classes), "stem_stride": m["stem_stride"]}
    spec.update({k: m[k] for k in ("classifier", *config_mod.CLASSIFIER_OPTIONS[m["classifier"]])})
    return spec


def _copy(src, dst):
    save_atomic(dst, lambda f: f.write(src.read_bytes()))


def _write_index(zoo_root, entries):
    index = {"version": zoo.INDEX_VERSION, "entries": sorted(entries, key=lambda e: e["name"])}
    save_atomic(zoo_root / zoo.INDEX, lambda f: f.write((json.dumps(index, indent=1) + "\n").encode()))


def _stamped(results, name):
    """The results of entry `name` with the CPU, kernel variant and commit they were computed on."""
    cpu = lade.cpu_info()
    results["run_dir"] = f"{ZOO_PREFIX}{name}"
    results["evaluated_on"] = {"cpu": cpu["model"], "kernel_variant": cpu["variant"], "commit": source_commit(),
                               "lade_version": lade.__version__}
    return results


def _headline(results):
    return {m["label"]: round(100 * m["uniform"]["top1"], 2) for m in results["methods"]}


def _save_results(folder, results, func):
    """Writes results.json into the entry folder; returns the index row's files (sha256, bytes) and total
    size, checked against the entry budget."""
    save_atomic(folder / "results.json", lambda f: f.write(json.dumps(results, indent=1).encode()))
    files = {f: {"sha256": zoo.file_digest(folder / f), "bytes": (folder / f).stat().st_size}
             for f in zoo.ENTRY_FILES}
    size = sum(meta["bytes"] for meta in files.values())
    if size > _ENTRY_BUDGET:
        raise RunError(f"{func}: the entry '{folder}' takes {size} bytes, over the budget of {_ENTRY_BUDGET}")
    return files, size


def _replace_row(zoo_root, entry):
    entries = [e for e in zoo.list(zoo_root) if e["name"] != entry["name"]] if (zoo_root / zoo.INDEX).is_file() else []
    _write_index(zoo_root, entries + [entry])


def add_run(run_dir, zoo_root=None, name=None, data_root=None):
    """Adds the finished run in `run_dir` to the zoo (replacing an entry of the same name) and returns
    the index entry. The weights are the last checkpoint's parameters and BN statistics (float32,
    compressed, without the optimiser's state)."""
    run_dir, zoo_root = Path(run_dir), zoo.resolve_root(zoo_root)
    if run_status(run_dir) != "finished":
        raise RunError(f"lade zoo add: '{run_dir}' is not a finished run (no final.json)")
    cfg = config_mod.load(run_dir / "config.yaml")
    name = name or entry_name(cfg)
    counts = np.load(run_dir / "train_counts.npy", allow_pickle=False)
    net = training.build_model(cfg, counts.shape[0])
    opt = nn.SGD(net, cfg["optim"]["lr"], momentum=cfg["optim"]["momentum"])
    epoch = load_checkpoint(run_dir, net, opt, cfg)  # checks the checkpoint belongs to this config
    if epoch != cfg["optim"]["epochs"]:
        raise RunError(f"lade zoo add: '{run_dir / 'checkpoint.npz'}' is from epoch {epoch}, expected the last "
                       f"({cfg['optim']['epochs']})")
    data = load_dataset(cfg, data_root)
    if not np.array_equal(data.counts, counts):
        raise RunError(f"lade zoo add: the data under '{data.root}' gives other training counts than the run in "
                       f"'{run_dir}' was trained with; pass the data root it used (--data-root)")
    results = _stamped(evaluation.evaluate_run(run_dir), name)
    folder = zoo_root / name
    folder.mkdir(parents=True, exist_ok=True)
    save_atomic(folder / zoo.WEIGHTS, lambda f: np.savez_compressed(f, **net.state_dict()))
    for file in _COPIED:
        _copy(run_dir / file, folder / file)
    files, size = _save_results(folder, results, "lade zoo add")
    sessions = json.loads((run_dir / "run.json").read_text())["sessions"]
    final = json.loads((run_dir / "final.json").read_text())
    entry = {"name": name, "config": cfg["name"], "dataset": cfg["data"]["dataset"],
             "imbalance": cfg["data"]["imbalance"], "loss": cfg["loss"]["name"], "seed": cfg["run"]["seed"],
             "model_seed": cfg["model"]["seed"], "epochs": cfg["optim"]["epochs"], "precision": cfg["run"]["precision"],
             "model": _model_spec(cfg, counts.shape[0]), "data_sha256": data.digest(),
             "headline": _headline(results),
             "train_hours": round(final["train_seconds"] / 3600, 2),
             "trained_on": sorted({f"{s['cpu']} ({s['kernel_variant']})" for s in sessions}),
             "commits": sorted({str(s["commit"]) for s in sessions}), "bytes": size, "files": files}
    _replace_row(zoo_root, entry)
    return entry


def refresh_results(name, zoo_root=None, data_root=None):
    """Computes the stored results.json of the zoo entry `name` again from its weights on this CPU (the
    logits by materialize, then every table of today's evaluate_run), for a report that has gained a table
    since the entry was added; updates its index row (file digests, size, headline). Returns the row."""
    zoo_root = zoo.resolve_root(zoo_root)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir, model = materialize(name, Path(tmp) / name, data_root, zoo_root)
        results = _stamped(evaluation.evaluate_run(run_dir), name)
    entry = dict(model.entry)
    entry["files"], entry["bytes"] = _save_results(zoo_root / name, results, "lade zoo refresh")
    entry["headline"] = _headline(results)
    _replace_row(zoo_root, entry)
    return entry


def materialize(name, out_dir, data_root=None, zoo_root=None):
    """The zoo entry `name` as a finished run folder `out_dir`: the entry's config, logs and training
    counts, and the test and held-out logits recomputed from its weights (lade.predict on this CPU).
    Returns (out_dir, the loaded ZooModel)."""
    entry = zoo.load(name, zoo_root)  # checks every file's sha256
    out_dir = Path(out_dir)
    check_output_dir(out_dir)
    cfg = config_mod.load(entry.path / "config.yaml")
    data = load_dataset(cfg, data_root)
    if data.digest() != entry.entry["data_sha256"]:
        raise RunError(f"lade evaluate: the data under '{data.root}' is not what {ZOO_PREFIX}{name} was trained and "
                       f"evaluated on (its training, held-out or test images or labels differ); pass the data root "
                       f"of {cfg['data']['dataset']} it used (--data-root)")
    out_dir.mkdir(parents=True, exist_ok=True)
    save_atomic(out_dir / RUN_MARKER, lambda f: f.write(f"{ZOO_PREFIX}{name}, evaluated again\n".encode()))
    batch, resolution = cfg["run"]["eval_batch_size"], cfg["data"]["resolution"]
    save_npy(out_dir / "test_logits.npy", training.eval_logits(entry.model, data.test[0], batch, resolution))
    save_npy(out_dir / "test_labels.npy", data.test[1])
    if data.calib is not None:
        save_npy(out_dir / "calib_logits.npy", training.eval_logits(entry.model, data.calib[0], batch, resolution))
        save_npy(out_dir / "calib_labels.npy", data.calib[1])
    for file in _COPIED:
        _copy(entry.path / file, out_dir / file)
    return out_dir, entry


# The main command's models: the paper's headline comparison at CIFAR-100-LT imbalance 100 (seed 1), in the
# order of its table
MAIN_CONFIGS = ("cifar100_lt_100_ce", "cifar100_lt_100_balanced_softmax", "cifar100_lt_100_lade")


def main_entries(zoo_root=None):
    """(names in the zoo, names not yet in it) of the main command's models (MAIN_CONFIGS, seed 1)."""
    names = [f"{config}_seed1" for config in MAIN_CONFIGS]
    present = {e["name"] for e in zoo.list(zoo_root)} if (zoo.resolve_root(zoo_root) / zoo.INDEX).is_file() else set()
    return [n for n in names if n in present], [n for n in names if n not in present]


def evaluate_entry(name, out_dir, data_root=None, zoo_root=None):
    """The results of the zoo entry `name` as evaluate_run gives them, the test and held-out logits recomputed
    from its weights into out_dir (materialize) and the uniform and shifted tests computed again; the
    estimated-prior table (a minute or more) is the one stored with the entry, and a note says so."""
    run_dir, entry = materialize(name, out_dir, data_root, zoo_root)
    results = evaluation.evaluate_run(run_dir, estimated_prior=False)
    stored = entry.results
    results["estimated_prior"] = stored.get("estimated_prior", {})
    if results["estimated_prior"]:
        on = stored.get("evaluated_on", {})
        results["notes"].append(f"the estimated-prior table is the one stored with {ZOO_PREFIX}{name} (computed at "
                                f"{str(on.get('commit', '?'))[:7]} on {on.get('cpu', '?')}, "
                                f"{on.get('kernel_variant', '?')})")
    return results

