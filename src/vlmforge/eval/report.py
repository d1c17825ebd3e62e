"""report.md and matplotlib plots from results.json dicts: one model's per-task / per-type table, or several
models side by side. Plots show fractions in [0, 1] only (MME's 0-200 scale goes to the tables)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _fmt(m: Mapping[str, Any] | None) -> str:
    if not m or m.get("value") is None:
        return "—"
    value, se = m["value"], m.get("stderr")
    text = f"{value:.3f}" if abs(value) <= 1 else f"{value:.1f}"
    return f"{text} ± {se:.3f}" if se is not None and abs(value) <= 1 else text


def _bars(results: Mapping[str, Any]) -> list[tuple[str, float, float | None, float | None]]:
    """(label, value, stderr, chance) for every plottable accuracy-like metric: each task's primary metric and
    its per-type accuracies."""
    out = []
    for name, task in results.get("tasks", {}).items():
        metrics = task.get("metrics", {})
        primary = metrics.get(task.get("primary", "accuracy"))
        if primary and primary.get("value") is not None and 0 <= primary["value"] <= 1:
            out.append((name, primary["value"], primary.get("stderr"), task.get("chance")))
        types = [k for k in metrics if k.endswith("/accuracy")]
        if len(types) > 1:
            for key in sorted(types):
                m = metrics[key]
                if m.get("value") is not None:
                    out.append((f"{name}:{key.split('/')[0]}", m["value"], m.get("stderr"), None))
    return out


def plot_models(runs: Sequence[tuple[str, Mapping[str, Any]]], path: Path, title: str = "") -> Path | None:
    """Grouped bars (one group per task/type, one bar per model) with error bars and a dashed chance line."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    per_model = [(name, {label: (v, se, ch) for label, v, se, ch in _bars(res)}) for name, res in runs]
    labels = list(dict.fromkeys(label for _, bars in per_model for label in bars))
    if not labels:
        return None
    width = 0.8 / max(len(per_model), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) * max(1, len(per_model)) ** 0.5), 4.0))
    for j, (model, bars) in enumerate(per_model):
        xs = [i + (j - (len(per_model) - 1) / 2) * width for i, lab in enumerate(labels) if lab in bars]
        vals = [bars[lab][0] for lab in labels if lab in bars]
        errs = [bars[lab][1] or 0.0 for lab in labels if lab in bars]
        ax.bar(xs, vals, width=width, yerr=errs, capsize=2, label=model)
    for i, lab in enumerate(labels):
        chance = next((bars[lab][2] for _, bars in per_model if lab in bars and bars[lab][2] is not None), None)
        if chance is not None:
            ax.hlines(chance, i - 0.45, i + 0.45, colors="black", linestyles="dashed", linewidth=1)
    ax.plot([], [], "k--", linewidth=1, label="chance")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (primary metric)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def summary_table(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Markdown: one row per task, one column per model (primary metric ± stderr), plus chance."""
    tasks = list(dict.fromkeys(t for _, res in runs for t in res.get("tasks", {})))
    lines = ["| task | metric | " + " | ".join(name for name, _ in runs) + " | chance |",
             "|---|---|" + "---|" * (len(runs) + 1)]  # fmt: skip
    for t in tasks:
        info = next(res["tasks"][t] for _, res in runs if t in res.get("tasks", {}))
        cells = [_fmt(res.get("tasks", {}).get(t, {}).get("metrics", {}).get(info["primary"])) for _, res in runs]
        chance = info.get("chance")
        lines.append(
            f"| {t} | {info['primary']} | " + " | ".join(cells) + f" | {'—' if chance is None else f'{chance:.3f}'} |"
        )
    return "\n".join(lines)


def _context_note(info: Mapping[str, Any]) -> list[str]:
    """A task's questions that did not fit the model's context (eval/budget.py), when there were any."""
    skipped, cut = (info.get("rejections") or {}).get("total", 0), info.get("cut_to_context", 0)
    if not skipped and not cut:
        return []
    return [f"Model context: {skipped} sample(s) skipped, their prompt leaving no room for an answer (left out of the "
            f"scores); {cut} answer(s) with max_new_tokens cut to the room their prompt leaves.", ""]  # fmt: skip


def write_report(results: Mapping[str, Any], out_dir: Path) -> Path:
    """report.md (summary + every metric per task) and plot_accuracy.png for one model's results."""
    name = str(results.get("model", {}).get("name", "model"))
    plot = plot_models([(name, results)], out_dir / "plot_accuracy.png", title=name)
    scoring = results.get("config", {}).get("scoring", "reference")
    lines = [f"# Evaluation report: {name}", "", f"Generated {results.get('timestamp', '')}; {scoring} scoring.", "",
             summary_table([(name, results)]), ""]  # fmt: skip
    if plot is not None:
        lines += [f"![accuracy per task]({plot.name})", ""]
    for task, info in results.get("tasks", {}).items():
        lines += [f"## {task}", "", info.get("description", ""), "", *_context_note(info),
                  "| metric | value | stderr | n |", "|---|---|---|---|"]  # fmt: skip
        for key, m in info.get("metrics", {}).items():
            se = "—" if m.get("stderr") is None else f"{m['stderr']:.4f}"
            val = "—" if m.get("value") is None else f"{m['value']:.4f}"
            lines.append(f"| {key} | {val} | {se} | {m.get('n')} |")
        lines.append("")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_comparison(runs: Sequence[tuple[str, Mapping[str, Any]]], out_dir: Path) -> Path:
    """comparison.md + comparison.png: several models side by side."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = plot_models(runs, out_dir / "comparison.png", title="model comparison")
    lines = ["# Model comparison", "", summary_table(runs), ""]
    if plot is not None:
        lines += [f"![comparison]({plot.name})", ""]
    path = out_dir / "comparison.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
