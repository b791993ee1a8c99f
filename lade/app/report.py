"""Report folders: evaluation computes the numbers, report_text renders them, report_plots draws them; this
writes them (report.md, results.json, the PNGs) into a run folder or an output folder, atomically.

``write_run_report`` writes a finished run's report into its folder; ``write_comparison`` several runs side by
side; ``write_logits_report`` the report of anyone's logits (lade.app.evaluation.evaluate_logits).
"""
import json
from pathlib import Path

from lade.app.evaluation import evaluate_run, seed_statistics
from lade.app.report_plots import plots
from lade.app.report_text import SUMMARY_HEADING, markdown, seed_markdown, summary_rows, table
from lade.app.runs import output_dir, save_atomic

__all__ = ["write_run_report", "write_comparison", "write_logits_report", "write_text"]


def write_logits_report(results, out_dir, title=None):
    """Writes report.md, results.json and the PNGs of evaluate_logits results (one dict or a list
    of them, side by side) into out_dir. Returns the markdown."""
    results = [results] if isinstance(results, dict) else list(results)
    out_dir = output_dir(out_dir)
    figures = plots(results, out_dir)
    text = markdown(results, title or f"Evaluation of {', '.join(r['name'] for r in results)}", figures)
    write_text(out_dir / "results.json", json.dumps(results if len(results) > 1 else results[0], indent=1))
    write_text(out_dir / "report.md", text)
    return text


def write_text(path, text):
    save_atomic(Path(path), lambda f: f.write(text.encode()))


def write_run_report(run_dir, results=None):
    """Evaluates a finished run (unless `results`, evaluate_run's, are given) and writes report.md,
    results.json and the PNGs into it. Returns (markdown, results)."""
    results = evaluate_run(run_dir) if results is None else results
    figures = plots([results], run_dir)
    text = markdown([results], f"Run {results['name']}", figures)
    write_text(Path(run_dir) / "results.json", json.dumps(results, indent=1))
    write_text(Path(run_dir) / "report.md", text)
    return text, results


def write_comparison(run_dirs, out_dir, title="Comparison", results=None):
    """Per-run reports plus one comparison.md / comparison_*.png in out_dir (`results`: the runs' evaluate_run
    results when computed already). Returns (the markdown, its brief for a console: the title, the summary
    table and the paired differences)."""
    out_dir = output_dir(out_dir)
    results = [write_run_report(d, r)[1] for d, r in zip(run_dirs, results or [None] * len(run_dirs))]
    figures = plots(results, out_dir, prefix="comparison_")
    summary = table(["method", "uniform top-1", "many", "medium", "few", "F50", "B50", "B50 (EM p_t)", "ECE-15",
                     "NLL"], summary_rows(results))
    text = markdown(results, title, figures, summary)
    seeds = seed_markdown(seed_statistics(results))
    if seeds:
        text = text.rstrip("\n") + "\n\n" + "\n".join(seeds)
    write_text(out_dir / "comparison.md", text)
    write_text(out_dir / "comparison.json", json.dumps(results, indent=1))
    brief = "\n".join([f"# {title}", "", SUMMARY_HEADING, "", summary, ""] + seeds)
    return text, brief.rstrip("\n") + "\n"
