"""The Genixer lab's report: the synthetic samples per task, the students per arm, the claims read off the
numbers, and two plots (correctness per judge band; student accuracy per arm)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmforge.shapes.lab.genixer_metrics import BANDS, mean_se

SHOWN = ("color", "shape", "count", "position", "exist", "mc", "rec")


def _n(value: float | None, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if value is not None else "n/a"


def _cell(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "n/a"
    return _n(entry["mean"]) + (f" ± {entry['se']:.3f}" if entry.get("se") is not None else "")


def task_lines(genixer: dict[str, Any]) -> list[str]:
    lines = ["| asked task | outputs | rejected | correct | judge AUROC | correct: low / medium / high band (n) | "
             "box filter: correct before → after, kept |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for task, row in genixer["tasks"].items():
        bands = " / ".join(f"{_n(row['bands'][b]['correct'], 2)} ({row['bands'][b]['n']})" for b in BANDS)
        box = row.get("box_filter")
        shown = (f"{_n(box['precision_before'])} → {_n(box['precision_after'])}, {_n(box['retention'], 2)}"
                 if box else "")  # fmt: skip
        lines.append(f"| {task} | {row['outputs']} | {_n(row['rejection_rate'])} | {_n(row['correct'])} | "
                     f"{_n(row['auroc'])} | {bands} | {shown} |")  # fmt: skip
    o = genixer["overall"]
    lines.append(f"| **all** | {o['outputs']} | {_n(o['rejection_rate'])} | {_n(o['correct'])} | {_n(o['auroc'])} "
                 "| | |")  # fmt: skip
    return lines


def mean_accuracy(arm: dict[str, Any]) -> dict[str, Any]:
    """Per seed, the mean accuracy over the evaluated question types; then mean ± SE over seeds."""
    per_seed = [sum(arm["summary"][t]["per_seed"][i] for t in SHOWN) / len(SHOWN)
                for i in range(len(arm["runs"]))]  # fmt: skip
    return mean_se(per_seed)


def arm_lines(genixer: dict[str, Any]) -> list[str]:
    lines = ["| arm | synthetic samples | " + " | ".join(SHOWN) + " | mean |", "|---" * (len(SHOWN) + 3) + "|"]
    for arm, entry in genixer["arms"].items():
        cells = " | ".join(_cell(entry["summary"].get(t)) for t in SHOWN)
        lines.append(f"| {arm} | {entry['synthetic']} | {cells} | {_cell(mean_accuracy(entry))} |")
    return lines


def claims(genixer: dict[str, Any]) -> list[str]:
    """Each claim's verdict from the numbers: a difference counts only where it exceeds twice its SE."""
    arms = genixer["arms"]

    def diff(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float | None]:
        se = None if a.get("se") is None or b.get("se") is None else (a["se"] ** 2 + b["se"] ** 2) ** 0.5
        return a["mean"] - b["mean"], se

    def verdict(d: float, se: float | None) -> str:
        if se is None:
            return "not testable with one seed"
        return "holds" if d > 2 * se else "does not hold (the other way)" if d < -2 * se else "not shown (within 2 SE)"

    def shown(d: float, se: float | None) -> str:
        return f"{d:+.3f}" + (f" ± {se:.3f}" if se is not None else "")

    out = []
    if "all" in arms:
        d, se = diff(mean_accuracy(arms["all"]), mean_accuracy(arms["L"]))
        out.append(f"- *Synthetic data helps* (L + all vs L, mean accuracy): {shown(d, se)}: {verdict(d, se)}.")
    if all(b in arms for b in BANDS):
        means = {b: mean_accuracy(arms[b]) for b in BANDS}
        best = max(means, key=lambda b: means[b]["mean"])
        d, se = min((diff(means["medium"], means[b]) for b in BANDS if b != "medium"), key=lambda x: x[0])
        out.append(f"- *The medium band is best* (equal size): the best band is {best}; medium minus the better "
                   f"other band {shown(d, se)}: {verdict(d, se)}.")  # fmt: skip
    elif "all" in arms:  # the students ran, but a band held no samples (see genixer_students.arm_data)
        out.append("- *The medium band is best*: not testable here: a judge band holds no samples, so no equal-size "
                   "band arms could be made.")  # fmt: skip
    if "all_boxfiltered" in arms and "all" in arms:
        d, se = diff(arms["all_boxfiltered"]["summary"]["rec"], arms["all"]["summary"]["rec"])
        out.append(f"- *The box filter helps REC* (L + box-filtered vs L + all, REC Acc@0.5): {shown(d, se)}: "
                   f"{verdict(d, se)}.")  # fmt: skip
    return out


def longer_run(genixer: dict[str, Any]) -> str:
    """What a longer run would change, read off this run's own limits (what it measured, not what it would)."""
    s, o = genixer["settings"], genixer["overall"]
    band = genixer["arms"].get("medium", {}).get("synthetic", 0)
    return (f"A longer run: this one trained the generator {s['generator_epochs']:g} epoch(s), and "
            f"{_n(o['rejection_rate'], 2)} of its outputs were rejected and {_n(o['correct'], 2)} of the parsed ones "
            f"correct; each equal-size band arm held {band} samples from a pool of {genixer['pool']['images']} images. "
            "More generator epochs and a larger pool (`GenixerSettings` in shapes/lab/genixer.py) are what raise "
            "those, and with them what the band and filter arms can show (docs/genixer.md).")  # fmt: skip


def genixer_report_lines(genixer: dict[str, Any], out: Path) -> list[str]:
    s = genixer["settings"]
    lines = ["## genixer", "",
             f"L: {genixer['labeled']['images']} labeled images ({s['labeled_fraction']:.0%} of the world's train "
             f"images). Pool: {genixer['pool']['images']} images of a second world "
             f"({genixer['pool']['duplicates_dropped']} scenes the first world holds dropped). Each pool image gets "
             "one request per task; `correct` is checked against the pool scene.", ""]  # fmt: skip
    lines += [*task_lines(genixer), "", "Students (mean ± SE over seeds, held-out test images; `rec` is Acc@0.5):", ""]
    lines += [*arm_lines(genixer), "", *claims(genixer), "", longer_run(genixer), ""]
    steps = ", ".join(f"{k} {v['wall']:.0f} s ({v['cpu']:.0f} s CPU)" for k, v in genixer["timings"].items())
    lines += [f"Genixer wall time per step of this run: {steps} (a step reused from an earlier run shows the time "
              "its reuse took).", ""]  # fmt: skip
    for plot in plot_genixer(genixer, out):
        lines += [f"![{plot.stem}]({plot.relative_to(out)})", ""]
    return lines


def plot_genixer(genixer: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    paths = []
    tasks = list(genixer["tasks"])
    fig, ax = plt.subplots(figsize=(1.1 * len(tasks) + 2, 3.6))
    for i, band in enumerate(BANDS):
        values = [genixer["tasks"][t]["bands"][band]["correct"] or 0 for t in tasks]
        ax.bar([x + (i - 1) * 0.27 for x in range(len(tasks))], values, 0.27, label=f"{band} band")
    ax.set_xticks(range(len(tasks)), tasks, rotation=30)
    ax.set_ylabel("share of samples correct")
    ax.legend()
    ax.set_title("Genixer lab: generated samples correct, per judge band")
    fig.tight_layout()
    paths.append(out / "genixer_bands.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    arms = list(genixer["arms"])
    means = [mean_accuracy(genixer["arms"][a]) for a in arms]
    fig, ax = plt.subplots(figsize=(1.0 * len(arms) + 2, 3.6))
    ax.bar(range(len(arms)), [m["mean"] for m in means], yerr=[m["se"] or 0 for m in means], capsize=3)
    ax.set_xticks(range(len(arms)), arms, rotation=30)
    ax.set_ylabel("mean accuracy over question types")
    ax.set_title("Genixer lab: students (mean ± SE over seeds)")
    fig.tight_layout()
    paths.append(out / "genixer_students.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
