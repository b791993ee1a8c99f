"""docs/results.md and the README's headline block, rendered from the zoo's stored results.

    python -m lade results        rewrites docs/results.md and the README block between its markers

Nothing is recomputed: every number comes from an entry's results.json (its full report, computed on
the machine that trained it) and index row, so the text changes only when the zoo does; a test renders
it again and compares it with the committed files.
"""
from pathlib import Path

import numpy as np

from lade import zoo
from lade.app import evaluation, report, report_text

__all__ = ["PAPER_UNIFORM", "PAPER_SHIFT_50", "render_results", "render_headline", "against_paper", "write",
           "stored",
           "README_BEGIN", "README_END"]

README_BEGIN = "<!-- results:headline:begin -->"  # generated between the two by `python3 -m lade results`
README_END = "<!-- results:headline:end -->"

# spec §6.1 (poster Table 1) and §6.2 (the authors' imbalance-50 notebook): uniform top-1 on CIFAR-100-LT
PAPER_UNIFORM = {
    ("cifar100", 100): {"PC Softmax": 45.3, "LADE": 45.4},
    ("cifar100", 50): {"Softmax": 45.46, "Causal Norm": 48.08, "Balanced Softmax": 49.89, "PC Softmax": 49.5,
                       "LADE": 50.5},
    ("cifar100", 10): {"PC Softmax": 61.6, "LADE": 61.7},
}
# spec §6.4: shifted tests on CIFAR-100-LT imbalance 50 (F50 ... uniform ... B50), the methods' own adjustment
PAPER_SHIFT_50 = {
    "Balanced Softmax": [59.6, 58.5, 56.9, 54.8, 52.2, 49.9, 47.5, 45.1, 42.7, 40.9, 39.9],
    "Causal Norm": [63.7, 61.6, 58.7, 55.9, 51.5, 48.1, 44.7, 41.2, 38.3, 35.6, 33.6],
    "Softmax": [65.9, 63.4, 59.7, 55.6, 50.1, 45.5, 40.8, 35.2, 30.5, 26.8, 23.9],
    "PC Balanced Softmax": [65.9, 63.1, 59.5, 56.3, 52.2, 49.9, 47.9, 46.9, 46.4, 47.3, 48.4],
    "PC Causal Norm": [66.1, 62.9, 58.8, 55.6, 51.2, 48.1, 45.7, 44.2, 43.4, 44.3, 44.9],
    "PC Softmax": [66.0, 63.2, 59.2, 55.9, 52.4, 49.4, 47.5, 46.7, 46.2, 47.4, 49.0],
    "LADE": [67.4, 64.7, 60.2, 56.3, 52.8, 50.5, 48.2, 47.4, 46.6, 48.1, 49.4],
}
# lade's name of a §6.4 row where it differs: the paper's "Balanced Softmax" is the model's output as it is,
# its "PC Balanced Softmax" the output adjusted to p_t (lade's "Balanced Softmax")
LADE_NAME_SHIFT_50 = {"Balanced Softmax": "Balanced Softmax without p_t", "PC Balanced Softmax": "Balanced Softmax"}

# lade's adjusted method whose uniform-test number the paper gives under the unadjusted name: f + log p_t with a
# uniform p_t ranks as f, so spec §6.2's "Causal Norm" (48.08) is also "PC Causal Norm" on the uniform test
PAPER_SAME_ON_UNIFORM = {"PC Causal Norm": "Causal Norm"}


def _paper_number(paper, label):
    return paper.get(label, paper.get(PAPER_SAME_ON_UNIFORM.get(label)))

# SADE (Zhang et al., NeurIPS 2022), test-agnostic long-tailed recognition: CIFAR-100-LT imbalance 100,
# ResNet-32, its README's test-time aggregation results (top-1 %) on these shifted tests
SADE = {"F50": 65.9, "F10": 58.3, "uniform": 49.8, "B10": 43.9, "B50": 42.4}


def _entries(zoo_root):
    """(index row, stored results) of every entry, by dataset, imbalance, config and seed."""
    out = []
    for e in sorted(zoo.list(zoo_root), key=lambda e: (e["dataset"], -e["imbalance"], e["config"], e["seed"])):
        out.append((e, zoo.load(e["name"], zoo_root).results))  # checks every file's digest
    return out


def _by_method(entries):
    """{(dataset, imbalance): {method label: [uniform top-1 % per seed]}}, adjusted and raw methods; a
    precision other than float32 is a method of its own ("LADE (bf16)"), not another seed."""
    table = {}
    for e, r in entries:
        precision = e.get("precision", "float32")  # entries added before the field are float32
        for m in r["methods"]:
            if r["test_time_form"] == "add_target" and m["label"] == r["raw_method"]:
                continue  # f + log p_t with a uniform p_t ranks as f: the raw row would repeat the adjusted one
            key, label = (e["dataset"], int(e["imbalance"])), m["label"]
            label += "" if precision == "float32" else f" ({precision})"
            table.setdefault(key, {}).setdefault(label, []).append(100 * m["uniform"]["top1"])
    return table


def _mean_std(values):
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def _headline_rows(entries):
    rows = []
    for (dataset, imbalance), methods in _by_method(entries).items():
        paper = PAPER_UNIFORM.get((dataset, imbalance), {})
        for label, values in methods.items():
            ref = _paper_number(paper, label)
            diff = "-" if ref is None else f"{np.mean(values) - ref:+.2f}"
            rows.append([f"{_DATASETS.get(dataset, dataset)}-LT", f"{imbalance}", label, _mean_std(values),
                         str(len(values)),
                         "-" if ref is None else f"{ref:g}", diff])
    return rows


_HEADLINE_HEADER = ["data", "imbalance", "method", "lade top-1 %", "seeds", "paper", "lade - paper"]
_DATASETS = {"cifar100": "CIFAR-100", "cifar10": "CIFAR-10"}


def against_paper(results, dataset="cifar100", imbalance=100):
    """Markdown table: the uniform top-1 of each method of `results` (evaluate_run's) that the paper reports
    at this dataset and imbalance (spec §6.1), against the paper's number."""
    paper = PAPER_UNIFORM.get((dataset, imbalance), {})
    refs = [(m, _paper_number(paper, m["label"])) for r in results for m in r["methods"]]
    rows = [[m["label"], f"{100 * m['uniform']['top1']:.2f}", f"{ref:g}", f"{100 * m['uniform']['top1'] - ref:+.2f}"]
            for m, ref in refs if ref is not None]
    return report_text.table(["method", "lade top-1 %", "paper", "lade - paper"], rows) if rows else ""


def render_headline(zoo_root=None):
    """The README's table: uniform top-1 of every zoo entry on CIFAR-100-LT against the paper."""
    entries = _entries(zoo_root)
    if not entries:
        return ("The model zoo holds no finished 200-epoch entry yet; its queue is "
                "[zoo/QUEUE.md](zoo/QUEUE.md).")
    return ("ResNet-32, whole uniform test set; from the [model zoo](zoo/), details in "
            "[docs/results.md](docs/results.md).\n\n" + report_text.table(_HEADLINE_HEADER, _headline_rows(entries)))


def _entry_section(e, r):
    trained = ", ".join(e["trained_on"])
    ev = r["evaluated_on"]
    lines = [f"### {e['name']}", "",
             f"`{e['config']}`, seed {e['seed']} (model seed {e['model_seed']}), {e['epochs']} epochs; trained in "
             f"{e['train_hours']} h on {trained} at {', '.join(c[:7] for c in e['commits'])}; evaluated on "
             f"{ev['cpu']} ({ev['kernel_variant']}); `python3 -m lade evaluate zoo:{e['name']}` recomputes it.", "",
             report_text.table(["method", "top-1", "top-5", "many", "medium", "few", "ECE-15", "ECE-20", "NLL",
                                "Brier"], report_text.uniform_rows([r])), "",
             "Shifted tests (top-1 %):", "",
             report_text.table(["method", "p_t"] + evaluation.SETTING_NAMES, report_text.shift_rows([r])), ""]
    notes = report_text.grouped_notes(r["notes"])  # why a row's estimate fell back, once per message
    if notes:
        lines += ["Notes on the shifted tests:", ""] + [f"- {n}" for n in notes] + [""]
    estimated = report_text.estimated_prior_markdown([r])
    if estimated:
        lines += [line.replace("## Estimated target prior", "Estimated target prior") for line in estimated]
    return lines


def _shift_50_lines(entries):
    ours = {}
    for e, r in entries:
        if (e["dataset"], int(e["imbalance"])) == ("cifar100", 50):
            ours.setdefault(r["method"], []).append([100 * v for v in r["shift"]["accuracy"]["oracle"]])
            ours.setdefault(r["raw_method"], []).append([100 * v for v in r["shift"]["accuracy"]["none"]])
    rows = []
    for paper_label, paper in PAPER_SHIFT_50.items():
        label = LADE_NAME_SHIFT_50.get(paper_label, paper_label)
        if label in ours:
            mean = np.mean(ours[label], axis=0)
            rows.append([label, "lade"] + [f"{v:.2f}" for v in mean])
            rows.append([label, "paper"] + [f"{v:g}" for v in paper])
            rows.append([label, "lade - paper"] + [f"{a - b:+.2f}" for a, b in zip(mean, paper)])
    if not rows:
        return []
    return ["## Shifted tests at imbalance 50 against spec §6.4 (oracle p_t; the raw softmax without adjustment)",
            "", report_text.table(["method", ""] + evaluation.SETTING_NAMES, rows), ""]


def _sade_lines(entries):
    """lade's best imbalance-100 model with the default estimator's p_t beside SADE, on SADE's columns."""
    candidates = [(r["methods"][0]["uniform"]["top1"], e, r) for e, r in entries
                  if (e["dataset"], int(e["imbalance"])) == ("cifar100", 100) and "em" in r["shift"]["accuracy"]]
    if not candidates:
        return []
    _, e, r = max(candidates, key=lambda c: c[0])
    col = {name: i for i, name in enumerate(evaluation.SETTING_NAMES)}
    acc = r["shift"]["accuracy"]
    rows = [[f"{r['method']} ({e['name']}), estimated p_t"] + [report_text.pct(acc["em"][col[k]]) for k in SADE],
            [f"{r['method']} ({e['name']}), oracle p_t"] + [report_text.pct(acc["oracle"][col[k]]) for k in SADE],
            ["SADE (its README)"] + [f"{v:g}" for v in SADE.values()]]
    return ["## Beside the test-agnostic state of the art: SADE", "",
            "CIFAR-100-LT imbalance 100, ResNet-32, top-1 % on shifted test sets (forward = head-heavy, backward = "
            "tail-heavy; spec §2.3). lade: its best single model in the zoo at this imbalance, adjusted at test time "
            "to the prior that lade's default estimator (EM after calibration on the held-out set, tilted, sparse or free, "
            "gated) finds in the unlabelled test set, and to the true prior for reference. SADE: the numbers of its "
            "README, not run here.", "",
            report_text.table(["model"] + list(SADE), rows), "",
            "Protocol differences: SADE trains three experts (that share the early stages of one network) and learns "
            "their aggregation weights at test time by self-supervision on the unlabelled test set; lade trains one "
            "network and estimates only the test set's label prior, from the same unlabelled test set. Both see the "
            "test images without labels, neither their labels. The shifted test sets are built the same way (a "
            "long-tailed or reversed profile of ratio 50 or 10 over the classes ranked by training frequency), but "
            "from each project's own draw of the CIFAR-100 test images.", ""]


def _paired_lines(entries):
    """LADE − PC Softmax at each imbalance (float32 entries): evaluation.seed_statistics's paired bootstrap
    over the test images, from the per-image hits stored with each entry; pooled over the seeds and per seed."""
    runs = {}
    for e, r in entries:
        if e.get("precision", "float32") == "float32" and r["loss"] in ("lade", "softmax_ce"):
            runs.setdefault((e["dataset"], int(e["imbalance"])), {}).setdefault(r["loss"], []).append(r)
    rows = []
    for (dataset, imbalance), by_loss in runs.items():
        if len(by_loss) < 2:
            continue
        for p in evaluation.seed_statistics(by_loss["lade"] + by_loss["softmax_ce"])["pairs"]:
            if not p["paired"]:
                continue
            head = [f"{_DATASETS.get(dataset, dataset)}-LT", f"{imbalance}"]
            interval = "[{lo:+.2f}, {hi:+.2f}]"
            rows.append(head + [f"{p['seeds']} pooled" if p["seeds"] > 1 else "1", f"{p['difference']:+.2f}",
                                interval.format(**p)])
            rows += [head + [f"{q['seeds'][0]}" if q["seeds"][0] == q["seeds"][1] else "{} and {}".format(*q["seeds"]),
                             f"{q['difference']:+.2f}", interval.format(**q)] for q in p.get("per_seed", [])]
    if not rows:
        return []
    return ["## LADE − PC Softmax, paired over the test images", "",
            f"The difference of uniform top-1 (points) between the LADE and the CE entries evaluated as PC Softmax, "
            f"with its {evaluation.SEED_LEVEL:.0%} paired bootstrap interval ({evaluation.SEED_REPLICATES} "
            f"resamples of the test images; the m-th seeds paired). Every interval resamples the test images only: "
            f"the pooled row averages its seeds image by image, and the spread between seeds is in the seed "
            f"rows and the table above.", "",
            report_text.table(["data", "imbalance", "seed", "LADE − PC Softmax", "interval"], rows), ""]


def render_results(zoo_root=None):
    """docs/results.md."""
    entries = _entries(zoo_root)
    lines = ["# Results", "",
             "Generated by `python3 -m lade results` from the model zoo's stored results (`zoo/*/results.json`, "
             "each computed once on the machine that trained the entry); do not edit. Queue and runs in progress: "
             "[zoo/QUEUE.md](../zoo/QUEUE.md).", ""]
    if not entries:
        return "\n".join(lines + ["The zoo holds no finished entry yet.", ""])
    lines += ["## Uniform test against the paper (top-1 %)", "",
              "Paper: spec §6.1 (poster Table 1), and at imbalance 50 the authors' notebook (spec §6.2). Several "
              "seeds: mean ± standard deviation.", "",
              report_text.table(_HEADLINE_HEADER, _headline_rows(entries)), ""]
    lines += _paired_lines(entries)
    lines += _shift_50_lines(entries)
    lines += _sade_lines(entries)
    lines += ["## Wall time", "", report_text.table(
        ["entry", "hours", "trained on", "commits"],
        [[e["name"], f"{e['train_hours']}", ", ".join(e["trained_on"]), ", ".join(c[:7] for c in e["commits"])]
         for e, _ in entries]), ""]
    lines += ["## Per entry", ""]
    for e, r in entries:
        lines += _entry_section(e, r)
    return "\n".join(lines)


def _block_span(text, path):
    """(start, end) of the README's generated block, between its markers."""
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError(f"lade results: '{path}' lacks the markers {README_BEGIN!r} ... {README_END!r}")
    return begin + len(README_BEGIN), end


def _replace_block(text, block, path):
    start, end = _block_span(text, path)
    return text[:start] + "\n" + block + "\n" + text[end:]


def write(repo_root, zoo_root=None):
    """Rewrites repo_root/docs/results.md and the README's marked block; returns the paths written."""
    repo_root = Path(repo_root)
    docs = repo_root / "docs" / "results.md"
    readme = repo_root / "README.md"
    if not readme.is_file():
        raise FileNotFoundError(f"lade results: no README.md in '{repo_root}'; run it from a checkout of lade")
    new_readme = _replace_block(readme.read_text(), render_headline(zoo_root), readme)
    docs.parent.mkdir(exist_ok=True)
    report.write_text(docs, render_results(zoo_root))
    report.write_text(readme, new_readme)
    return [docs, readme]


def stored(repo_root):
    """The committed (docs/results.md text, README block text), for the test that renders them again."""
    repo_root = Path(repo_root)
    readme = repo_root / "README.md"
    start, end = _block_span(readme.read_text(), readme)
    return (repo_root / "docs" / "results.md").read_text(), readme.read_text()[start + 1:end - 1]

