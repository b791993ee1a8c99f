"""The model zoo: the repository's entries load, match their digests and reproduce their stored
accuracy from the weights; a damaged, missing or mismatched file is a named error; a finished run
becomes an entry that `lade evaluate zoo:NAME` reports on exactly as on the run folder."""
import json
import shutil

import numpy as np
import pytest

import lade
from conftest import REPO_ROOT
from lade import metrics, zoo
from lade.app import config, evaluation, results_doc, runs, training, zoo_entries
from lade.app.cli import main
from test_cli import TINY, run_main, tiny_root, train_args  # noqa: F401  (tiny_root is a fixture)

ZOO = REPO_ROOT / "zoo"
ENTRIES = [e["name"] for e in zoo.list(ZOO)]
WIP = sorted(p.name for p in (ZOO / "wip").iterdir()) if (ZOO / "wip").is_dir() else []
# kernel variants round differently, so recomputed logits may flip a few borderline test images
TOP1_TOLERANCE = 0.05  # points


def test_the_zoo_folders_and_the_index_agree():
    folders = {p.name for p in ZOO.iterdir() if p.is_dir() and p.name != "wip"}
    assert folders == set(ENTRIES)
    sizes = [e["bytes"] for e in zoo.list(ZOO)]
    assert max(sizes, default=0) <= 2_500_000 and sum(sizes) <= 45_000_000, sizes  # issue 24's budget


@pytest.mark.parametrize("name", WIP)
def test_a_wip_run_resumes_from_its_checkpoint(name, tmp_path):
    """zoo/wip/NAME is a run folder stopped between sessions: it resumes with its own config."""
    run = tmp_path / name
    shutil.copytree(ZOO / "wip" / name, run)
    cfg, resuming = runs.check_run_dir(run, config.load(run / "config.yaml"), resume=True)
    assert resuming and runs.run_status(run) == "running"
    counts = np.load(run / "train_counts.npy")
    net = training.build_model(cfg, counts.shape[0])
    opt = lade.SGD(net, cfg["optim"]["lr"], momentum=cfg["optim"]["momentum"])
    epoch = runs.load_checkpoint(run, net, opt, cfg)
    assert 0 < epoch < cfg["optim"]["epochs"]
    assert [r["epoch"] for r in runs.read_metrics(run / "metrics.jsonl")] == list(range(1, epoch + 1))


@pytest.mark.parametrize("name", ENTRIES)
def test_a_zoo_entry_reproduces_its_stored_accuracy_from_the_weights(name, tmp_path):
    run_dir, entry = zoo_entries.materialize(name, tmp_path / name)
    assert entry.model.num_classes == entry.train_counts.shape[0]
    assert entry.source_prior.sum() == pytest.approx(1.0, abs=1e-5)
    logits, labels = np.load(run_dir / "test_logits.npy"), np.load(run_dir / "test_labels.npy")
    adjusted = entry.adjust(logits)  # the run's own test-time form, uniform target
    stored = entry.results["methods"][0]["uniform"]["top1"]
    recomputed = metrics.accuracy(adjusted, labels)
    assert abs(100 * (recomputed - stored)) <= TOP1_TOLERANCE, (recomputed, stored)
    assert entry.entry["headline"][entry.results["methods"][0]["label"]] == round(100 * stored, 2)


# --------------------------------------------------------------------- an entry made from a tiny run

@pytest.fixture(scope="module")
def tiny_zoo(tiny_root, tmp_path_factory):  # noqa: F811
    """A zoo holding one entry: a finished 2-epoch run of the tiny CIFAR-10 data."""
    base = tmp_path_factory.mktemp("zoo")
    run = base / "run"
    assert main([str(a) for a in train_args(tiny_root, run, "optim.epochs=2", "--no-report")]) == 0
    entry = zoo_entries.add_run(run, base / "zoo", data_root=tiny_root)
    return base / "zoo", run, entry


def test_a_finished_run_becomes_an_entry_with_its_weights(tiny_zoo):
    root, run, entry = tiny_zoo
    assert entry["name"] == "cifar10_lt_10_lade_seed1" and [e["name"] for e in zoo.list(root)] == [entry["name"]]
    loaded = zoo.load(entry["name"], root)
    with np.load(run / "checkpoint.npz") as ck:
        assert np.array_equal(loaded.model.params, ck["params"])
        assert np.array_equal(loaded.model.buffers, ck["buffers"])
    assert np.array_equal(loaded.train_counts, np.load(run / "train_counts.npy"))
    assert loaded.test_time_form == "add_target" and loaded.results["evaluated_on"]["kernel_variant"]
    with np.load(root / entry["name"] / zoo.WEIGHTS) as w:  # named like the state_dict, no optimiser state
        assert set(w.files) == set(loaded.model.state_dict()) and all(w[k].dtype == np.float32 for k in w.files)


def test_lade_zoo_env_variable_names_the_root(tiny_zoo, monkeypatch):
    root, _, entry = tiny_zoo
    monkeypatch.setenv("LADE_ZOO", str(root))
    assert [e["name"] for e in zoo.list()] == [entry["name"]]
    monkeypatch.setenv("LADE_ZOO", str(root / "nowhere"))
    with pytest.raises(zoo.ZooError, match="no zoo index .*nowhere"):
        zoo.list()


def _copy_zoo(tiny_zoo, tmp_path):
    root, _, entry = tiny_zoo
    shutil.copytree(root, tmp_path / "zoo")
    return tmp_path / "zoo", entry["name"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
@pytest.mark.parametrize("file", [zoo.WEIGHTS, "train_counts.npy", "results.json"])
def test_a_damaged_or_missing_file_is_named(tiny_zoo, tmp_path, damage, file):
    root, name = _copy_zoo(tiny_zoo, tmp_path)
    path = root / name / file
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 1
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[:-1]))
    else:
        path.unlink()
    expected = {"flip": "sha256", "truncate": "bytes", "delete": "missing"}[damage]
    with pytest.raises(zoo.ZooError, match=f"{file}.*{expected}"):
        zoo.load(name, root)


def test_an_unknown_name_and_a_broken_index_are_named(tiny_zoo, tmp_path):
    root, name = _copy_zoo(tiny_zoo, tmp_path)
    with pytest.raises(zoo.ZooError, match=f"argument 'name' must be one of the zoo's entries \\({name}\\), got 'x'"):
        zoo.load("x", root)
    (root / zoo.INDEX).write_text("[1, 2]")
    with pytest.raises(zoo.ZooError, match="index.json': expected"):
        zoo.load(name, root)
    (root / zoo.INDEX).write_bytes(b"\xff\x00")
    with pytest.raises(zoo.ZooError, match="not readable JSON"):
        zoo.list(root)


def test_an_index_whose_files_match_but_whose_model_does_not_is_named(tiny_zoo, tmp_path):
    root, name = _copy_zoo(tiny_zoo, tmp_path)
    index = json.loads((root / zoo.INDEX).read_text())
    index["entries"][0]["model"]["num_classes"] = 11
    (root / zoo.INDEX).write_text(json.dumps(index))
    with pytest.raises(zoo.ZooError, match=f"entry '{name}' .* does not load .*fc.weight"):
        zoo.load(name, root)


def test_evaluate_zoo_entry_reports_as_on_the_run_folder(tiny_zoo, tiny_root, tmp_path, capsys, monkeypatch):  # noqa: F811
    root, run, entry = tiny_zoo
    monkeypatch.setenv("LADE_ZOO", str(root))
    out = tmp_path / "eval"
    code, text, err = run_main(["evaluate", f"zoo:{entry['name']}", "--data-root", tiny_root, "--out", out], capsys)
    assert code == 0, err
    folder = out / entry["name"]
    # the same weights on the same CPU: the recomputed logits are the run's, bit for bit
    assert np.array_equal(np.load(folder / "test_logits.npy"), np.load(run / "test_logits.npy"))
    assert np.array_equal(np.load(folder / "calib_logits.npy"), np.load(run / "calib_logits.npy"))
    recomputed = json.loads((folder / "results.json").read_text())
    stored = zoo.load(entry["name"]).results
    assert recomputed["methods"] == stored["methods"] and recomputed["shift"] == stored["shift"]
    assert (out / "comparison.md").read_text() == text.rstrip("\n") + "\n"  # --out: a comparison of the entry


def test_evaluate_zoo_entry_refuses_other_data(tiny_zoo, tiny_root, tmp_path, capsys, monkeypatch):  # noqa: F811
    root, _, entry = tiny_zoo
    monkeypatch.setenv("LADE_ZOO", str(root))
    other = tmp_path / "data"
    shutil.copytree(tiny_root, other)
    test = other / "cifar-10-batches-bin" / "test_batch.bin"  # one pixel of one test image: same counts, labels
    data = bytearray(test.read_bytes())
    data[100] ^= 0xFF
    test.write_bytes(bytes(data))
    code, _, err = run_main(["evaluate", f"zoo:{entry['name']}", "--out", tmp_path / "e", "--data-root", other],
                            capsys)
    assert code == 2 and f"the data under '{other}' is not what zoo:{entry['name']} was trained" in err, err
    assert not (tmp_path / "e" / entry["name"]).exists()  # no logits of other data


def test_the_main_command_evaluates_the_zoo_models_against_the_paper(tiny_zoo, tiny_root, tmp_path, capsys,  # noqa: F811
                                                                      monkeypatch):
    """`lade compare` evaluates the zoo's imbalance-100 models from their weights (here the tiny run entered
    under the LADE model's name), prints the table against the paper and names the models still missing;
    --quick trains instead, and overrides are refused for the zoo's models."""
    root, run, _ = tiny_zoo
    zoo_root = tmp_path / "zoo"
    shutil.copytree(root, zoo_root)
    zoo_entries.add_run(run, zoo_root, name="cifar100_lt_100_lade_seed1", data_root=tiny_root)
    monkeypatch.setenv("LADE_ZOO", str(zoo_root))
    assert zoo_entries.main_entries() == (["cifar100_lt_100_lade_seed1"],
                                          ["cifar100_lt_100_ce_seed1", "cifar100_lt_100_balanced_softmax_seed1"])
    out = tmp_path / "cmp"
    code, text, err = run_main(["compare", "--out", out, "--data-root", tiny_root], capsys)
    assert code == 0, err
    stored = zoo.load("cifar100_lt_100_lade_seed1").results
    lade_top1 = 100 * stored["methods"][0]["uniform"]["top1"]
    assert f"| LADE | {lade_top1:.2f} | 45.4 | {lade_top1 - 45.4:+.2f} |" in text, text
    assert "Not in the zoo yet: cifar100_lt_100_ce_seed1, cifar100_lt_100_balanced_softmax_seed1" in text
    assert len(text.splitlines()) <= 40 and "## Summary" in text and "--quick" in text
    assert np.array_equal(np.load(out / "cifar100_lt_100_lade_seed1" / "test_logits.npy"),
                          np.load(run / "test_logits.npy"))
    recomputed = json.loads((out / "cifar100_lt_100_lade_seed1" / "results.json").read_text())
    assert recomputed["shift"] == stored["shift"] and recomputed["estimated_prior"] == stored["estimated_prior"]
    code, _, err = run_main(["compare", "--out", out, "optim.epochs=3"], capsys)
    assert code == 2 and "overrides and --stop-after train" in err


def test_zoo_list_prints_each_entry(tiny_zoo, capsys):
    root, _, entry = tiny_zoo
    code, out, _ = run_main(["zoo", "list", "--root", root], capsys)
    assert code == 0 and out.startswith(f"{entry['name']}: cifar10 imbalance 10, 2 epochs, LADE ")


def test_zoo_add_refuses_an_unfinished_run(tiny_root, tmp_path, capsys):  # noqa: F811
    run = tmp_path / "run"
    assert run_main(train_args(tiny_root, run, "optim.epochs=3", "--stop-after", "1", "--no-report"), capsys)[0] == 0
    code, _, err = run_main(["zoo", "add", run, "--root", tmp_path / "zoo"], capsys)
    assert code == 2 and "not a finished run" in err and not (tmp_path / "zoo").exists()


def test_zoo_refresh_computes_the_stored_results_again(tiny_zoo, tiny_root, tmp_path, capsys):  # noqa: F811
    """An entry stored before the report gained a table (here: its suite columns taken out of results.json,
    the index updated to match) gets today's full results back from its weights, and a consistent index."""
    root, name = _copy_zoo(tiny_zoo, tmp_path)
    full = zoo.load(name, root).results
    assert full["estimated_prior"]["suite"]["targets"]
    old = json.loads(json.dumps(full))
    del old["estimated_prior"]["suite"]
    (root / name / "results.json").write_text(json.dumps(old))
    index = json.loads((root / zoo.INDEX).read_text())
    index["entries"][0]["files"]["results.json"] = {"sha256": zoo.file_digest(root / name / "results.json"),
                                                    "bytes": (root / name / "results.json").stat().st_size}
    (root / zoo.INDEX).write_text(json.dumps(index))
    assert "suite" not in zoo.load(name, root).results["estimated_prior"]
    code, _, err = run_main(["zoo", "refresh", name, "--root", root, "--data-root", tiny_root], capsys)
    assert code == 0 and f"computed the results of {name} again" in err
    again = zoo.load(name, root).results  # checks every file against the index
    assert again["estimated_prior"] == full["estimated_prior"] and again["methods"] == full["methods"]
    assert zoo.list(root)[0]["headline"] == zoo.list(tiny_zoo[0])[0]["headline"]
    assert run_main(["zoo", "refresh", "--root", root], capsys)[0] == 2


def test_a_bf16_run_is_its_own_entry_and_its_own_row(tiny_zoo):
    """A bf16 run of a config must not replace (or be averaged with) the float32 run of the same config
    and seed: its name and its headline label carry the precision."""
    root, run, entry = tiny_zoo
    cfg = config.load(run / "config.yaml")
    assert entry["precision"] == "float32" and zoo_entries.entry_name(cfg) == entry["name"]
    cfg["run"]["precision"] = "bf16"
    assert zoo_entries.entry_name(cfg) == entry["name"].replace("_seed", "_bf16_seed")
    stored = zoo.load(entry["name"], root).results
    rows = results_doc._by_method([(entry, stored), (dict(entry, precision="bf16"), stored)])
    labels = rows[(entry["dataset"], int(entry["imbalance"]))]
    assert len(labels["LADE"]) == 1 and len(labels["LADE (bf16)"]) == 1


def test_the_entry_config_is_the_runs(tiny_zoo):
    root, run, entry = tiny_zoo
    assert config.load(root / entry["name"] / "config.yaml") == config.load(run / "config.yaml")


# ------------------------------------------------------------------ docs/results.md and the README table

def test_the_committed_results_are_what_the_zoo_renders():
    """`python3 -m lade results` was run after the zoo last changed (rerun it when this fails)."""
    docs, block = results_doc.stored(REPO_ROOT)
    assert docs == results_doc.render_results(ZOO)
    assert block == results_doc.render_headline(ZOO)


def test_results_render_an_entry_from_its_stored_numbers(tiny_zoo, tmp_path):
    root, _, entry = tiny_zoo
    stored = zoo.load(entry["name"], root).results
    text = results_doc.render_results(root)
    lade_top1 = f"{100 * stored['methods'][0]['uniform']['top1']:.2f}"
    assert f"| CIFAR-10-LT | 10 | LADE | {lade_top1} | 1 | - | - |" in text
    assert f"### {entry['name']}" in text and f"evaluate zoo:{entry['name']}" in text
    assert "spec §6.4" not in text  # no imbalance-50 CIFAR-100 entry to set against the paper's table
    (tmp_path / "README.md").write_text(f"intro\n{results_doc.README_BEGIN}\nold\n{results_doc.README_END}\nrest\n")
    results_doc.write(tmp_path, root)
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("intro\n") and readme.endswith(f"{results_doc.README_END}\nrest\n") and "old" not in readme
    assert results_doc.stored(tmp_path) == (text, results_doc.render_headline(root))


def test_results_set_the_best_imbalance_100_model_beside_sade(tiny_zoo):
    root, _, entry = tiny_zoo
    r = zoo.load(entry["name"], root).results
    assert "SADE" not in results_doc.render_results(root)  # no CIFAR-100 entry at imbalance 100
    weaker = json.loads(json.dumps(r))
    weaker["methods"][0]["uniform"]["top1"] -= 0.1
    as_100 = [({**entry, "dataset": "cifar100", "imbalance": 100, "name": n}, res)
              for n, res in (("weaker", weaker), ("best", r))]
    lines = "\n".join(results_doc._sade_lines(as_100))
    col = {name: i for i, name in enumerate(evaluation.SETTING_NAMES)}
    estimated = ["n/a" if v is None else f"{100 * v:.2f}"
                 for v in (r["shift"]["accuracy"]["em"][col[k]] for k in ("F50", "F10", "uniform", "B10", "B50"))]
    assert f"| {r['method']} (best), estimated p_t | {' | '.join(estimated)} |" in lines, lines
    assert "| SADE (its README) | 65.9 | 58.3 | 49.8 | 43.9 | 42.4 |" in lines and "(weaker)" not in lines


def test_results_refuse_a_readme_without_the_markers(tiny_zoo, tmp_path):
    (tmp_path / "README.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="lade results: .*README.md' lacks the markers"):
        results_doc.write(tmp_path, tiny_zoo[0])
    assert not (tmp_path / "docs").exists()


def test_shift_50_rows_pair_lade_and_paper_by_what_they_adjust():
    """Spec §6.4's "Balanced Softmax" is the output as it is, its "PC Balanced Softmax" the output adjusted to p_t
    (lade's "Balanced Softmax"): each lade row sits beside the paper row of the same kind."""
    from lade.app import evaluation, results_doc

    k = len(evaluation.SETTING_NAMES)
    entry = {"dataset": "cifar100", "imbalance": 50}
    result = {"method": "Balanced Softmax", "raw_method": "Balanced Softmax without p_t",
              "shift": {"accuracy": {"oracle": [0.9] * k, "none": [0.1] * k}}}
    text = "\n".join(results_doc._shift_50_lines([(entry, result)]))
    table = [[c.strip() for c in line.split("|")[1:-1]] for line in text.split("\n") if line.startswith("| Balanced")]
    raw = [r for r in table if r[0] == "Balanced Softmax without p_t"]
    adjusted = [r for r in table if r[0] == "Balanced Softmax"]
    assert [r[1] for r in raw] == ["lade", "paper", "lade - paper"] and raw[0][2] == "10.00"
    assert raw[1][2:] == [f"{v:g}" for v in results_doc.PAPER_SHIFT_50["Balanced Softmax"]]
    assert adjusted[0][2] == "90.00"
    assert adjusted[1][2:] == [f"{v:g}" for v in results_doc.PAPER_SHIFT_50["PC Balanced Softmax"]]


def test_the_causal_norm_row_is_set_against_the_papers_uniform_number():
    """Causal Norm's adjusted method (PC Causal Norm, the TDE logits + log p_t) is its headline row; on the
    uniform test it equals the unadjusted output, which spec §6.2 reports as "Causal Norm" (48.08)."""
    entry = {"dataset": "cifar100", "imbalance": 50, "precision": "float32"}
    result = {"test_time_form": "add_target", "method": "PC Causal Norm", "raw_method": "Causal Norm",
              "methods": [{"label": "PC Causal Norm", "uniform": {"top1": 0.5}},
                          {"label": "Causal Norm", "uniform": {"top1": 0.5}}]}
    assert results_doc._headline_rows([(entry, result)]) == [
        ["CIFAR-100-LT", "50", "PC Causal Norm", "50.00", "1", "48.08", "+1.92"]]
    text = results_doc.against_paper([result], "cifar100", 50)
    assert "| PC Causal Norm | 50.00 | 48.08 | +1.92 |" in text and "| Causal Norm | 50.00 | 48.08 | +1.92 |" in text


def test_a_note_of_every_shifted_test_is_one_line_in_the_results():
    """A fallback note repeated for all eleven shifted tests reads once ('on every shifted test'); one that
    concerns some of them names those; docs/results.md shows an entry's notes under its shifted tests."""
    from lade.app import report_text
    notes = [f"{s} BBSE: fell back" for s in evaluation.SETTING_NAMES] + ["F50 EM: x", "B50 EM: x"]
    assert report_text.grouped_notes(notes) == ["BBSE on every shifted test: fell back", "EM on F50, B50: x"]
    docs = results_doc.render_results(ZOO)
    for e in json.loads((ZOO / "index.json").read_text())["entries"]:
        section = docs.split(f"### {e['name']}\n", 1)[1].split("\n### ", 1)[0]
        stored = json.loads((ZOO / e["name"] / "results.json").read_text())["notes"]
        assert ("Notes on the shifted tests:" in section) == bool(stored)
