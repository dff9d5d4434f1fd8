"""The status page's learning curve: held-out accuracy per version with how much it rests on.

A young project holds out a handful of tasks, so one point can read 0.0 or 1.0 by chance. Each
point therefore carries its 95% Wilson interval and the number of held-out tasks behind it, and
points resting on fewer than RELIABLE_HELDOUT tasks are drawn hollow.

A project whose label config asks several questions (or a multiple-choice one) gets the mean
over the questions as that curve, and each question's own accuracy (a multiple-choice
question's subset accuracy: every label right) as a thinner line of its own colour.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RELIABLE_HELDOUT = 20  # as PROMOTION_MIN_HELDOUT: fewer held-out tasks compare nothing reliably
BLUE, RED, GREY = "#1f77b4", "#d62728", "#8a8a8a"
QUESTION_COLOURS = ("#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion: sensible at n = 3 and at 0 or n successes,
    where the normal approximation gives [0, 0] or [1, 1]."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_interval(metrics: dict | None) -> tuple[float, float, float, int] | None:
    """(accuracy, low, high, held-out n) of a version's metrics, or None when not evaluated."""
    n = (metrics or {}).get("n") or 0
    acc = (metrics or {}).get("accuracy")
    if not n or acc is None:
        return None
    low, high = wilson(round(acc * n), n)
    return acc, low, high, n


def learning_curve_png(versions: list[dict]) -> bytes:
    """Held-out accuracy against labels, one point per version, with 95% Wilson intervals."""
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    points = [(v["n_labels"], accuracy_interval(v.get("metrics")), v)
              for v in versions if v.get("n_labels") is not None]
    measured = [(x, iv, v) for x, iv, v in points if iv]
    if measured:
        xs = [x for x, _, _ in measured]
        ys = [iv[0] for _, iv, _ in measured]
        ax.fill_between(xs, [iv[1] for _, iv, _ in measured], [iv[2] for _, iv, _ in measured],
                        color=BLUE, alpha=0.12, lw=0, label="95% interval (Wilson)")
        ax.plot(xs, ys, color=BLUE, lw=2, zorder=2)
        solid = [(x, iv) for x, iv, _ in measured if iv[3] >= RELIABLE_HELDOUT]
        hollow = [(x, iv) for x, iv, _ in measured if iv[3] < RELIABLE_HELDOUT]
        for group, face, label in ((solid, BLUE, f"≥ {RELIABLE_HELDOUT} held-out tasks"),
                                   (hollow, "white", f"< {RELIABLE_HELDOUT} held-out tasks")):
            if group:
                ax.errorbar([x for x, _ in group], [iv[0] for _, iv in group],
                            yerr=[[max(0.0, iv[0] - iv[1]) for _, iv in group],
                                  [max(0.0, iv[2] - iv[0]) for _, iv in group]],
                            fmt="o", ms=7, mfc=face, mec=BLUE, ecolor=BLUE, elinewidth=1,
                            capsize=3, zorder=3, label=label)
        for x, iv, v in measured:
            below = iv[0] > 0.8  # keeps the label inside the axes
            ax.annotate(f"n={iv[3]}", (x, iv[0]), textcoords="offset points",
                        xytext=(9, -12 if below else 6), ha="left", fontsize=8, color="#333")
            if v.get("serving"):
                ax.scatter([x], [iv[0]], s=220, facecolors="none", edgecolors=RED, lw=2,
                           zorder=4, label=f"serving ({v['version']})")
    several = _question_curves(ax, points)
    blank = [x for x, iv, _ in points if not iv]
    if blank:
        ax.scatter(blank, [0.0] * len(blank), marker="x", color=GREY, zorder=3, clip_on=False,
                   label="not evaluated (see table)")
    if not points:
        ax.text(0.5, 0.5, "no version yet", ha="center", va="center", transform=ax.transAxes,
                color="#666")
    ax.set_ylim(0, 1.05)
    ax.margins(x=0.08)  # room for the last point's label
    ax.set_xlabel("labels the version was trained and evaluated on")
    ax.set_ylabel("held-out accuracy" + (" (mean over questions)" if several else ""))
    ax.set_title("Learning curve (n = held-out tasks behind each point)", fontsize=10)
    ax.grid(alpha=0.3)
    if points:
        ax.legend(loc="lower right", fontsize=7, framealpha=0.9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def question_curves(versions: list[dict]) -> dict[str, list[tuple[int, float, bool]]]:
    """Per question, in the order versions first answer it: (labels, held-out accuracy, whether
    multiple-choice) of each version that measured it."""
    out: dict[str, list[tuple[int, float, bool]]] = {}
    for v in versions:
        per = (v.get("metrics") or {}).get("questions") or {}
        kinds = {q["name"]: bool(q.get("multiple")) for q in v.get("questions") or []}
        if not v.get("several_questions") or v.get("n_labels") is None:
            continue
        for name, m in per.items():
            if m and m.get("n") and m.get("accuracy") is not None:
                out.setdefault(name, []).append((v["n_labels"], m["accuracy"],
                                                 kinds.get(name, False)))
    return out


def _question_curves(ax, points: list) -> bool:
    """Each question's accuracy as a thin line; True when any version answers several."""
    curves = question_curves([v for _, _, v in points])
    for i, (name, pts) in enumerate(curves.items()):
        kind = "subset accuracy" if pts[-1][2] else "accuracy"
        ax.plot([x for x, _, _ in pts], [y for _, y, _ in pts], lw=1.2, ls="--", marker="s",
                ms=4, color=QUESTION_COLOURS[i % len(QUESTION_COLOURS)], zorder=2,
                label=f"{name}: {kind}".replace("$", r"\$"))
    return bool(curves)
