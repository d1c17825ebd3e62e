"""The Uni-X lab's part of report.md: both arms side by side, the conflict plot, and what the numbers say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

EXACT_TYPES = ("color", "shape", "count", "position", "exist")


def _cell(entry: dict[str, Any] | None, digits: int = 3) -> str:
    if not entry:
        return "—"
    se = f" ± {entry['se']:.{digits}f}" if entry.get("se") is not None else ""
    return f"{entry['mean']:.{digits}f}{se}"


def _differs(a: dict[str, Any], b: dict[str, Any]) -> int:
    """-1 / 1 when a's mean lies more than two combined standard errors below / above b's, else 0."""
    spread = 2 * ((a.get("se") or 0) ** 2 + (b.get("se") or 0) ** 2) ** 0.5
    return -1 if a["mean"] < b["mean"] - spread else 1 if a["mean"] > b["mean"] + spread else 0


def understanding(recipe: dict[str, Any]) -> tuple[float, float]:
    """Mean accuracy over the exact-match question types, and the question-only baseline's mean over them."""
    rows = [recipe["summary"][t] for t in EXACT_TYPES if t in recipe["summary"]]
    return sum(r["mean"] for r in rows) / len(rows), sum(r["question_only"] or 0 for r in rows) / len(rows)


def unix_report_lines(unix: dict[str, Any], out: Path, recipes: dict[str, Any] | None = None) -> list[str]:
    arms, ceiling = unix["arms"], unix["ceiling"]["overall"]
    cfgs = [key.removeprefix("geneval_cfg") for key in arms["shared"]["summary"] if key.startswith("geneval_cfg")]
    lines = ["## Uni-X: shared vs two_end at equal active parameters", "",
             "Conflict: mean over the shared middle layers and the seven weight types of −(cos(text, multimodal) − "
             "cos(random halves)), on the same questions and answers with and without their image. GenEval: exact, "
             f"on {unix['geneval_items']} held-out captions; the tokenizer round trip of their target scenes scores "
             f"{ceiling:.3f} (the ceiling), images decoded from random codes {unix['random_codes']['overall']:.3f} (the "
             "floor). Text loss: per token, on held-out captions as text.", "",
             "| arm | active / total parameters | understanding (exact types) | question only | conflict at init | "
             "conflict trained | " + " | ".join(f"GenEval cfg {c}" for c in cfgs) + " | text loss init → trained |",
             "|---|---|---|---|---|---|" + "---|" * len(cfgs) + "---|"]  # fmt: skip
    for arm, entry in arms.items():
        s, params = entry["summary"], entry["runs"][0]["parameters"]
        mean, blind = understanding(recipes[f"unix-{arm}"]) if recipes else (float("nan"), float("nan"))
        geneval = " | ".join(_cell(s[f"geneval_cfg{c}"]) for c in cfgs)
        lines.append(f"| {arm} | {params['active'] / 1e6:.2f} M / {params['total'] / 1e6:.2f} M | {mean:.3f} | "
                     f"{blind:.3f} | {_cell(s['conflict_init'], 4)} | {_cell(s['conflict_trained'], 4)} | {geneval} | "
                     f"{_cell(s['text_loss_init'])} → {_cell(s['text_loss'])} |")  # fmt: skip
    lines += ["", *_verdict(arms, cfgs, ceiling, unix["random_codes"]["overall"], recipes), ""]
    plot = _plot(arms, out / "unix_conflict.png")
    if plot:
        lines += [f"![conflict per shared layer and weight type, seed {arms['shared']['runs'][0]['seed']}]({plot.name})",
                  ""]  # fmt: skip
    return lines


def _verdict(
    arms: dict[str, Any], cfgs: list[str], ceiling: float, floor: float, recipes: dict[str, Any] | None
) -> list[str]:
    """What the numbers say, in words chosen by the numbers (two standard errors decide a difference)."""
    two, shared = arms["two_end"]["summary"], arms["shared"]["summary"]
    words = {-1: "lower than", 0: "not distinguishable from", 1: "higher than"}
    lines = [f"- Conflict in the shared layers after training: two_end {_cell(two['conflict_trained'], 4)} is "
             f"{words[_differs(two['conflict_trained'], shared['conflict_trained'])]} shared "
             f"{_cell(shared['conflict_trained'], 4)} (at initialisation: "
             f"{words[_differs(two['conflict_init'], shared['conflict_init'])]})."]  # fmt: skip
    best = max(cfgs, key=lambda c: max(two[f"geneval_cfg{c}"]["mean"], shared[f"geneval_cfg{c}"]["mean"]))
    lines.append(f"- Drawing: the best GenEval (cfg {best}) is two_end {_cell(two[f'geneval_cfg{best}'])}, shared "
                 f"{_cell(shared[f'geneval_cfg{best}'])}, against a ceiling of {ceiling:.3f} and random codes' "
                 f"{floor:.3f}.")  # fmt: skip
    if recipes:
        for arm in arms:
            mean, blind = understanding(recipes[f"unix-{arm}"])
            relation = "above" if mean > blind + 0.02 else "not above"
            lines.append(f"- Reading ({arm}): {mean:.3f} on the exact question types, {relation} the question-only "
                         f"baseline {blind:.3f}.")  # fmt: skip
    return lines


def _plot(arms: dict[str, Any], path: Path) -> Path | None:
    from vlmforge.train.conflict import plot_conflict

    curves = {}
    for arm, entry in arms.items():
        run = entry["runs"][0]
        curves[f"{arm} init"], curves[f"{arm} trained"] = run["conflict_init"], run["conflict_trained"]
    return plot_conflict(curves, path) if curves else None
