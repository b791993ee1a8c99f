"""The report's figures (matplotlib, PNG), drawn from the results of lade.app.evaluation."""
from pathlib import Path

import numpy as np

from lade.app.evaluation import MODES, SETTING_NAMES
from lade.app.report_text import MODE_TEXT
from lade.app.runs import save_atomic

__all__ = ["plots"]


def plots(results, out_dir, prefix=""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        counts = np.asarray(r["train_counts"])
        for i, m in enumerate(r["methods"]):
            if i and m["per_class"] == r["methods"][0]["per_class"]:
                continue  # the raw logits of LADE-style models give the same uniform predictions
            ax.scatter(counts, 100 * np.asarray(m["per_class"], float), s=10, alpha=0.6, label=f"{m['label']}")
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class")
    ax.set_ylabel("test accuracy of the class (%)")
    ax.set_title("Per-class accuracy against training frequency (uniform test)")
    ax.legend(fontsize=7)
    names.append(_save(fig, out_dir, f"{prefix}per_class_accuracy.png"))

    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = np.arange(len(SETTING_NAMES))
    styles = {"oracle": "-", "em": "--", "bbse": ":", "none": "-."}  # line style: where p_t comes from
    colors = {}  # colour: the method (Softmax, PC Softmax, LADE, ...)
    for r in results:
        for mode in MODES:
            y = [np.nan if v is None else 100 * v for v in r["shift"]["accuracy"][mode]]
            method = r["raw_method"] if mode == "none" else r["method"]
            color = colors.setdefault(method, f"C{len(colors)}")
            ax.plot(x, y, styles[mode], color=color, marker="o", ms=3, label=f"{method}, {MODE_TEXT[mode]}")
    ax.set_xticks(x, SETTING_NAMES, rotation=45)
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Shifted test sets")
    ax.legend(fontsize=6, ncol=2)
    names.append(_save(fig, out_dir, f"{prefix}shifted_tests.png"))

    panels = [(r, m) for r in results for m in r["methods"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (r, m) in zip(axes[0], panels):
        rel = m["reliability"]
        edges = np.asarray(rel["edges"])
        n_bins = len(edges) - 1
        accs = np.asarray(rel["accuracy"][:n_bins], float)
        cnt = np.asarray(rel["count"][:n_bins])
        accs[cnt == 0] = 0
        ax.bar(edges[:-1], accs, width=np.diff(edges), align="edge", edgecolor="k", alpha=0.7)
        ax.plot([0, 1], [0, 1], "r--", lw=1)
        ax.set_title(f"{m['label']}\nECE {rel['ece']:.3f}", fontsize=8)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
    names.append(_save(fig, out_dir, f"{prefix}reliability.png"))
    return names


def _save(fig, out_dir, name):
    import matplotlib.pyplot as plt
    fig.tight_layout()
    try:
        save_atomic(Path(out_dir) / name, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)
    return name
