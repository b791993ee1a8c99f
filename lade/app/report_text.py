"""Markdown from the results of lade.app.evaluation: the report's tables, as text."""
from lade.app.evaluation import MODES, SETTING_NAMES

__all__ = ["markdown", "estimated_prior_markdown", "seed_markdown", "table", "pct", "uniform_rows", "shift_rows",
           "summary_rows", "suite_table", "SUMMARY_HEADING", "MODE_TEXT"]


MODE_TEXT = {"none": "no adjustment", "oracle": "oracle p_t", "em": "EM p_t", "bbse": "BBSE p_t"}


def pct(v):
    return "n/a" if v is None or v != v else f"{100 * v:.2f}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def uniform_rows(results):
    rows = []
    for r in results:
        for m in r["methods"]:
            u = m["uniform"]
            rows.append([m["label"] if len(results) == 1 else f"{m['label']} ({r['name']})", pct(u["top1"]),
                         pct(u["top5"]), pct(u["many"]), pct(u["medium"]), pct(u["few"]), f"{u['ece']:.4f}",
                         f"{u['ece20']:.4f}", f"{u['nll']:.4f}", f"{u['brier']:.4f}"])
    return rows


def shift_rows(results, modes=MODES):
    rows = []
    for r in results:
        for mode in modes:
            name = r["raw_method"] if mode == "none" else r["method"]
            rows.append([name, MODE_TEXT[mode]] + [pct(v) for v in r["shift"]["accuracy"][mode]])
    return rows


SUMMARY_HEADING = ("## Summary (top-1 %; F50 / B50 with the method's adjustment to the true p_t, none for the raw "
                   "softmax)")


def markdown(results, title, figures, summary=None):
    parts = [f"# {title}", ""]
    if summary:
        parts += [SUMMARY_HEADING, "", summary, ""]
    setup_rows = []
    for r in results:  # a run's setup, or "-" where logits came without one (evaluate_logits)
        u = r["setup"]
        get = lambda key, fmt="{}": "-" if u.get(key) is None else fmt.format(u[key])  # noqa: E731
        setup_rows.append([r["name"], get("dataset") if "dataset" in u else "logits", get("imbalance", "{:g}"),
                           r["loss"], get("epochs"), get("batch_size"), get("lr", "{:g}"), get("seed"),
                           get("train_images"), get("test_images"), get("calib_images"), get("train_seconds", "{:.0f}")])
    parts += [table(["run", "data", "imbalance", "loss", "epochs", "batch", "lr", "seed", "train imgs",
                     "test imgs", "held-out imgs", "train s"], setup_rows), ""]
    parts += ["## Uniform test (top-1 %, many / medium / few by training count; calibration)", "",
              table(["method", "top-1", "top-5", "many", "medium", "few", "ECE-15", "ECE-20", "NLL", "Brier"],
                     uniform_rows(results)), ""]
    parts += ["## Shifted tests (top-1 %; forward = head-heavy, backward = tail-heavy, spec §2.3)", "",
              table(["method", "p_t"] + SETTING_NAMES, shift_rows(results)), ""]
    err_rows = []
    for r in results:
        for m in ("em", "bbse"):
            err_rows.append([r["method"], m.upper()] + ["n/a" if v is None else f"{v:.3f}"
                                                        for v in r["shift"]["prior_l1_error"][m]])
    parts += ["## Prior estimation error (L1 distance between estimated and true p_t)", "",
              table(["method", "estimator"] + SETTING_NAMES, err_rows), ""]
    parts += estimated_prior_markdown(results)
    notes = [f"- {r['name']}: {n}" for r in results for n in grouped_notes(r["notes"])]
    if notes:
        parts += ["Notes:", ""] + notes + [""]
    parts += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
    return "\n".join(parts)


def estimated_prior_markdown(results):
    ready = [r for r in results if "estimators" in r.get("estimated_prior", {})]
    if not ready:
        return []
    acc_rows, err_rows, gate_rows = [], [], []
    for r in ready:
        e = r["estimated_prior"]
        acc_rows.append([r["method"], "no adjustment (uniform p_t)"] + [pct(v) for v in e["accuracy"]["none"]])
        acc_rows.append([r["method"], "oracle p_t"] + [pct(v) for v in e["accuracy"]["oracle"]])
        for m, label in e["estimators"].items():
            acc_rows.append([r["method"], label] + [pct(v) for v in e["accuracy"][m]])
            err_rows.append([r["method"], label] + ["n/a" if v is None else f"{v:.3f}" for v in e["prior_l1_error"][m]])
        for m, flags in e["gated"].items():
            gate_rows.append([r["method"], e["estimators"][m]] + ["n/a" if v is None else ("kept" if v else "adapted")
                                                                  for v in flags])
    held = ready[0]["estimated_prior"]
    settings = held.get("settings", SETTING_NAMES)
    parts = ["## Estimated target prior (top-1 %)", "",
             f"Protocol: {held['protocol']} ({held['held_out_images']} held-out and {held['pool_images']} pool "
             "images); the estimators see the subset's logits without labels (the few-label ones also the labels of "
             "k images per class of the subset). Accuracy on the whole subset with the method's adjustment to the "
             "estimated p_t.", "",
             table(["method", "p_t"] + settings, acc_rows), "",
             "L1 distance between estimated and true p_t:", "",
             table(["method", "estimator"] + settings, err_rows), ""]
    if gate_rows:
        parts += ["Gate decisions (kept = no shift detected, the model's own prior is kept):", "",
                  table(["method", "estimator"] + settings, gate_rows), ""]
    suites = [r for r in ready if r["estimated_prior"].get("suite")]
    if suites:
        parts += ["### Shifts off the long tail (the suite: mean / worst of its draws)", "",
                  "The spec's shifted tests all lie along the training prior's direction, p_t ∝ p_s^g, the tilted family "
                  "the default estimator fits first. These targets do not: long-tail profiles over a random class "
                  "order (LT10, LT50), Dirichlet(α) priors (Dir0.1 ... Dir3), only k classes present (k2, k5, k20), "
                  "and uniform random sets of 200 and 1,000 images (n200, n1000; no shift, a small set's noise), "
                  "each drawn several times from the same pool with fixed seeds; pool: the whole pool. Rows: the "
                  "default estimator and the two baselines its goals compare with (docs/label-shift.md).", ""]
        for r in suites:
            parts += [f"{r['method']}:", "", suite_table(r["estimated_prior"]["suite"])]
    notes = [f"- {r['name']}: {n}" for r in ready for n in grouped_notes(r["estimated_prior"]["notes"])]
    if notes:
        parts += ["Notes on the estimated-prior table:", ""] + notes + [""]
    return parts


def suite_table(suite):
    """Markdown of a suite digest (lade.app.evaluation.suite_digest): top-1 % mean / worst draw per method and
    target, then per estimator the gap to the better baseline (mean / worst, points; where both baselines
    were run), the prior's absolute error and its KL (means)."""
    summary, names = suite["summary"], suite["targets"]
    labels = {"none": "no adjustment", "oracle": "oracle p_t", **suite["estimators"]}
    head = "| {} | " + " | ".join(names) + " |\n|---|" + "---|" * len(names)
    lines = [head.format("top-1 %: mean / worst draw")]
    for m, label in labels.items():
        lines.append(f"| {label} | " + " | ".join(
            f"{100 * summary[t][m]['mean']:.2f} / {100 * summary[t][m]['worst']:.2f}" for t in names) + " |")
    lines.append("| images (min-max), draws | " + " | ".join(
        "{}-{}, {}".format(*suite["images"][t]) for t in names) + " |")
    for title, key in (("gap to the better of MLLS + BCTS and BBSE, points: mean / worst", "gap"),
                       ("prior's absolute error (x 1000) / KL", "err")):
        rows = []
        for m in suite["estimators"]:
            e = [summary[t][m] for t in names]
            if key == "err":
                rows.append([f"{1000 * x['abs_error']:.2f} / {x['kl']:.3f}" for x in e])
            elif "gap_mean" in e[0]:
                rows.append([f"{100 * x['gap_mean']:+.2f} / {100 * x['gap_worst']:+.2f}" for x in e])
            else:
                continue
            lines.append(f"| {labels[m]} | " + " | ".join(rows[-1]) + " |")
        if rows:
            idx = len(lines) - len(rows)
            lines[idx:idx] = ["", head.format(title)]
    return "\n".join(lines) + "\n"


def grouped_notes(notes):
    """'F50 EM: x', 'F25 EM: x' -> 'EM on F50, F25: x', one line per distinct message; a message of
    every shifted test reads 'EM on every shifted test: x'."""
    by_text = {}
    for note in notes:
        where, _, text = note.partition(": ")
        setting, _, method = where.partition(" ")
        key = (method, text)
        by_text.setdefault(key, []).append(setting)
    lines = []
    for (method, text), settings in by_text.items():
        where = "every shifted test" if sorted(settings) == sorted(SETTING_NAMES) else ", ".join(settings)
        lines.append(f"{method + ' on ' if method else ''}{where}: {text}")
    return lines


def summary_rows(results):
    """Per run: the adjusted method (oracle p_t on shifted sets, plus EM) and the raw softmax."""
    rows = []
    for r in results:
        acc = r["shift"]["accuracy"]
        for m, mode in ((r["methods"][0], "oracle"), (r["methods"][1], "none")):
            u = m["uniform"]
            rows.append([m["label"], pct(u["top1"]), pct(u["many"]), pct(u["medium"]), pct(u["few"]),
                         pct(acc[mode][0]), pct(acc[mode][-1]), pct(acc["em"][-1]) if mode == "oracle" else "-",
                         f"{u['ece']:.4f}", f"{u['nll']:.4f}"])
    return rows


def seed_markdown(stats):
    """Markdown lines of seed_statistics; [] when there is nothing to pair."""
    lines = []
    rows = [[s["method"], s["config"], str(s["seeds"]), f"{s['mean']:.2f} ± {s['std']:.2f}",
             ", ".join(f"{v:.2f}" for v in s["per_seed"])] for s in stats["seeds"]]
    if rows:
        lines += ["## Seeds", "", table(["method", "config", "seeds", "uniform top-1 (mean ± std)", "per seed"], rows),
                  ""]
    if not stats["pairs"]:
        return lines
    if not rows:
        lines += ["## Paired difference (one seed each)", ""]
    for p in stats["pairs"]:
        if not p["paired"]:
            lines.append(f"- {p['a']} vs {p['b']}: not paired (different seed counts or test sets)")
            continue
        lines.append(f"- {p['a']} − {p['b']}: "
                     f"{p['difference']:+.2f} points, {p['level']:.0%} paired bootstrap interval "
                     f"[{p['lo']:+.2f}, {p['hi']:+.2f}] over {p['images']} test images and "
                     + (f"{p['seeds']} seeds" if p["seeds"] > 1 else
                        "one seed (the test images' noise only, not the seed's)"))
        for q in p.get("per_seed", []):
            seed = f"seed {q['seeds'][0]}" if q["seeds"][0] == q["seeds"][1] else "seeds {} and {}".format(*q["seeds"])
            lines.append(f"  - {seed} alone: {q['difference']:+.2f} points [{q['lo']:+.2f}, {q['hi']:+.2f}]")
    return lines + [""]
