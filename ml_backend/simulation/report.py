"""What a simulation reports: labels needed to reach a share of full-data quality, per metric.

Both accuracy and macro-F1 are reported: on imbalanced data accuracy is reached while rare
classes are still missed, and macro-F1 is what shows it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

THRESHOLDS = (0.90, 0.95, 0.99)
METRICS = ("accuracy", "macro_f1")
CSV_COLUMNS = (
    "strategy", "repeat", "round", "n_labels", "accuracy", "macro_f1", "full_accuracy",
    "full_macro_f1", "selected_by", "promoted", "serving",
)  # fmt: skip


def labels_to_reach(rows: list[dict], target: float, metric: str = "accuracy") -> int | None:
    """Fewest labels at which the curve reaches `target` in `metric`; None if it never does."""
    for row in sorted(rows, key=lambda r: r["n_labels"]):
        if row[metric] >= target - 1e-12:
            return row["n_labels"]
    return None


def median_or_none(values: Sequence[float | None]) -> float | None:
    """Median counting a miss (None) as infinity; None when half or more missed."""
    med = float(np.median([math.inf if v is None else v for v in values]))
    return None if math.isinf(med) or math.isnan(med) else med


def _stat(values: list) -> dict:
    return {"per_repeat": values, "median": float(np.median(values))}


def summarise(rows: list[dict], full: list[dict], strategies: Sequence[str]) -> dict:
    """Per strategy and metric: labels to reach 90/95/99% of the full-data value (the model
    trained on the whole training split), and the ratio of their median to random's."""
    out: dict[str, dict] = {}
    for name in strategies:
        per = [[r for r in rows if r["strategy"] == name and r["repeat"] == rep]
               for rep in range(len(full))]  # fmt: skip
        reach: dict[str, dict] = {}
        for metric in METRICS:
            reach[metric] = {}
            for t in THRESHOLDS:
                needed = [labels_to_reach(curve, t * f[metric], metric)
                          for curve, f in zip(per, full)]  # fmt: skip
                reach[metric][f"{t:.0%}"] = {"per_repeat": needed, "median": median_or_none(needed)}
        out[name] = {
            "labels_to_reach": reach,
            "seed_batch_accuracy": _stat([min(c, key=lambda r: r["n_labels"])["accuracy"]
                                          for c in per]),  # fmt: skip
            "final_accuracy": _stat([max(c, key=lambda r: r["n_labels"])["accuracy"] for c in per]),
            "final_macro_f1": _stat([max(c, key=lambda r: r["n_labels"])["macro_f1"] for c in per]),
            "refused_promotions": sum(not r.get("promoted", True) for c in per for r in c),
        }
    for entry in out.values():
        entry["ratio_to_random"] = {
            metric: {key: _ratio(reach["median"], out, metric, key)
                     for key, reach in entry["labels_to_reach"][metric].items()}
            for metric in METRICS
        }  # fmt: skip
    return out


def _ratio(median: float | None, out: dict, metric: str, key: str) -> float | None:
    base = out.get("random", {}).get("labels_to_reach", {}).get(metric, {}).get(key, {})
    if median is None or not base.get("median"):
        return None
    return median / base["median"]


def question_summary(rows: list[dict], full: list[dict], strategies: Sequence[str],
                     columns: Sequence[str]) -> dict:
    """Several questions: each question's metrics (`columns`, `<metric>:<question>`) on the
    whole training split and at the end of each strategy's curve, medians over the repeats."""

    def med(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return float(np.median(values)) if values else None

    out: dict[str, dict] = {"full_data": {c: med([f.get(c) for f in full]) for c in columns}}
    for name in strategies:
        ends = [max((r for r in rows if r["strategy"] == name and r["repeat"] == rep),
                    key=lambda r: r["n_labels"]) for rep in range(len(full))]
        out[name] = {c: med([e.get(c) for e in ends]) for c in columns}
    return out


def write_csv(path: Path, rows: list[dict], columns: Sequence[str] = CSV_COLUMNS) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def plot(path: Path, rows: list[dict], full: list[dict], title: str) -> None:
    """Mean accuracy and macro-F1 per strategy with min-max bands over repeats; dashed: the
    whole training split. `random`, the baseline every curve is read against, is grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), dpi=110, sharex=True)
    for ax, metric in zip(axes, METRICS):
        for name in dict.fromkeys(r["strategy"] for r in rows):
            curve = [r for r in rows if r["strategy"] == name]
            xs = sorted({r["n_labels"] for r in curve})
            val = [[r[metric] for r in curve if r["n_labels"] == n] for n in xs]
            style = {"color": "0.45", "ls": "-."} if name == "random" else {}
            (line,) = ax.plot(xs, [np.mean(v) for v in val], lw=1.6, label=name,
                              marker="." if len(xs) <= 40 else None, **style)  # fmt: skip
            ax.fill_between(xs, [min(v) for v in val], [max(v) for v in val],
                            color=line.get_color(), alpha=0.12, lw=0)  # fmt: skip
        ref = float(np.mean([f[metric] for f in full]))
        ax.axhline(ref, color="black", ls="--", lw=1.1, label=f"whole training split ({ref:.1%})")
        ax.set(xlabel="labelled images", ylabel=f"test {metric.replace('_', '-')}")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    band = f"mean of {len(full)} repeats, band: min-max" if len(full) > 1 else "1 repeat"
    fig.suptitle(f"{title}\n{band}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_summary(summary: dict) -> str:
    """A small table: labels needed (median) per metric and threshold, and the ratio to random."""
    keys = [f"{t:.0%}" for t in THRESHOLDS]
    cols = [(m, k) for m in METRICS for k in keys]
    head = f"{'strategy':<15}{'seed acc':>9}" + "".join(
        f"{('acc' if m == 'accuracy' else 'F1') + '@' + k:>9}{'/rand':>6}" for m, k in cols)
    full = summary["full_data"]
    lines = [f"full-data accuracy {full['accuracy']['median']:.3f}, macro-F1 "
             f"{full['macro_f1']['median']:.3f} (medians)", head]  # fmt: skip
    for name, e in summary["strategies"].items():
        cells = ""
        for m, k in cols:
            n, ratio = e["labels_to_reach"][m][k]["median"], e["ratio_to_random"][m][k]
            need = "-" if n is None else f"{n:g}"
            cells += f"{need:>9}{'-' if ratio is None else f'{ratio:.2f}':>6}"
        lines.append(f"{name:<15}{e['seed_batch_accuracy']['median']:>9.3f}{cells}")
    if summary.get("per_question"):
        lines += ["", "per question at the end of each curve (medians; full: whole training "
                  "split):"]
        per = summary["per_question"]
        for column in per["full_data"]:
            cells = "  ".join(f"{name} {_fmt(values[column])}" for name, values in per.items())
            lines.append(f"  {column:<28}{cells.replace('full_data', 'full')}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
