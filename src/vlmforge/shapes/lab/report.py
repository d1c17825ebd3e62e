"""The lab's report: a markdown table per recipe and one PNG plot of accuracy per question type vs chance."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _cell(entry: dict[str, Any]) -> str:
    se = f" ± {entry['se']:.3f}" if entry.get("se") is not None else ""
    return f"{entry['mean']:.3f}{se}"


def _number(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "n/a"


def _paraphrased_lines(recipe: dict[str, Any]) -> list[str]:
    """The paraphrased rows: the same test questions in held-out phrasings, next to the canonical template's."""
    paraphrased = recipe.get("paraphrased") or {}
    if not paraphrased:
        return []
    lines = ["", "Paraphrased: the same held-out test questions asked in phrasings that no training record uses.", "",
             "| question type | templated | paraphrased | paraphrased / templated | questions per seed | per seed |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for task, entry in paraphrased.items():
        templated = recipe["summary"].get(task)
        base = templated["mean"] if templated else None
        ratio = _number(entry["mean"] / base) if base else "n/a"
        seeds = ", ".join(f"{v:.3f}" for v in entry["per_seed"])
        shown = _cell(templated) if templated else "n/a"
        lines.append(f"| paraphrased {task} | {shown} | {_cell(entry)} | {ratio} | {entry['n']} | {seeds} |")
    return lines


def write_lab_report(results: dict[str, Any], out: Path) -> Path:
    lines = ["# vlmforge shapes lab", ""]
    lines.append(
        f"Seeds: {', '.join(map(str, results['seeds']))}. Every model is evaluated on the same held-out test images "
        "of the shapes world (never seen in training). Accuracy is the mean over seeds ± its standard error; "
        "`rec` is Acc@0.5 (IoU ≥ 0.5)."
    )
    lines.append("")
    lines.append(
        "*Question only* is the accuracy of answering each test question with the most frequent training answer to "
        "the same question text, without the image: a model at that level has learnt nothing from the images."
    )
    lines.append("")
    for name, recipe in results["recipes"].items():
        lines += [f"## {name}", "",
                  "| question type | accuracy | chance | question only | questions per seed | per seed |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for task, entry in recipe["summary"].items():
            chance, blind = (_number(entry.get(key)) for key in ("chance", "question_only"))
            seeds = ", ".join(f"{v:.3f}" for v in entry["per_seed"])
            lines.append(f"| {task} | {_cell(entry)} | {chance} | {blind} | {entry['n']} | {seeds} |")
        lines += _paraphrased_lines(recipe)
        train = [run["train_seconds"] for run in recipe["runs"]]
        seconds = ", ".join(f"{t:.0f} s" for t in train)
        lines += ["", f"Training wall time per seed (as recorded when each stage ran): {seconds}.", ""]
    if results.get("unicorn"):
        from vlmforge.shapes.lab.unicorn import unicorn_report_lines

        lines += unicorn_report_lines(results)
    if results.get("genixer"):
        from vlmforge.shapes.lab.genixer_report import genixer_report_lines

        lines += genixer_report_lines(results["genixer"], out)
    if results.get("unix"):
        from vlmforge.shapes.lab.unix_report import unix_report_lines

        lines += unix_report_lines(results["unix"], out, results["recipes"])
    reading = results["foundation"].get("reading_test")
    if reading:
        scores = ", ".join(f"{task} {value:.3f}" for task, value in reading.items())
        lines += [
            f"Foundation LM's reading test (held-out scenes as object vectors, before any image): {scores}. A "
            "question type it did not learn there is not learned in the stages either (docs/foundation.md).",
            "",
        ]
    if results["foundation"].get("reader_passed") is False:
        lines += [
            "**Warning:** the foundation LM's reading phase missed its pass marks in every attempt (see "
            "`lm.reader.attempts` in the foundation's manifest.json); the question types it missed stay poor. "
            "Rebuild it with another `--seed` or more `--reader-attempts` (docs/foundation.md).",
            "",
        ]
    timings = results["timings_seconds"]
    lines.append(
        "Wall time: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + (" (foundation models reused from cache)" if results["foundation"]["reused"] else "")
    )
    plot = plot_lab(results, out / "accuracy.png")
    if plot:
        lines += ["", f"![accuracy per question type]({plot.name})"]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_lab(results: dict[str, Any], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    recipes = results["recipes"]
    if not recipes:
        return None
    tasks = list(next(iter(recipes.values()))["summary"])
    width = 0.8 / len(recipes)
    fig, ax = plt.subplots(figsize=(1.2 * len(tasks) + 2, 4))
    for i, (name, recipe) in enumerate(recipes.items()):
        summary = recipe["summary"]
        xs = [t + (i - (len(recipes) - 1) / 2) * width for t in range(len(tasks))]
        ax.bar(xs, [summary[t]["mean"] for t in tasks], width, yerr=[summary[t]["se"] or 0 for t in tasks],
               capsize=3, label=name)  # fmt: skip
    for t, task in enumerate(tasks):
        chance = next(iter(recipes.values()))["summary"][task].get("chance")
        if chance is not None:
            ax.hlines(
                chance, t - 0.45, t + 0.45, colors="black", linestyles="dashed", label="chance" if t == 0 else None
            )
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy on held-out images")
    ax.legend(loc="lower right")
    ax.set_title("shapes lab: accuracy per question type (mean ± SE over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
