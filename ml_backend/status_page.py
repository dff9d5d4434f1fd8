"""The status page people open at `/`: per project, the learning curve and the job history."""

from __future__ import annotations

import io
import time
from html import escape

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def learning_curve_png(versions: list[dict], metric: str = "accuracy") -> bytes:
    """Held-out `metric` against the number of labels, one point per version."""
    points = [(v["n_labels"], (v.get("metrics") or {}).get(metric), v["version"], v["serving"])
              for v in versions if v.get("n_labels") is not None]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    measured = [(n, m) for n, m, _, _ in points if m is not None]
    if measured:
        xs, ys = zip(*measured)
        ax.plot(xs, ys, marker="o", color="#1f77b4", label=f"held-out {metric}")
        for n, m, name, serving in points:
            if m is not None and serving:
                ax.scatter([n], [m], s=120, facecolors="none", edgecolors="#d62728",
                           label=f"serving ({name})", zorder=3)
        ax.set_ylim(0, 1.02)
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no evaluated version yet\n(held-out metrics need 10+ labels)",
                ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xlabel("labels")
    ax.set_ylabel(metric)
    ax.set_title("Learning curve")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else escape(str(value if value is not None else ""))


def render(statuses: list[dict]) -> str:
    """The whole page for every project the backend knows."""
    sections = []
    for st in statuses:
        p = st["project"]
        version_rows = "".join(
            f"<tr><td>{escape(v['version'])}{' (serving)' if v['serving'] else ''}</td>"
            f"<td>{_fmt(v['n_labels'])}</td>"
            f"<td>{_fmt((v.get('metrics') or {}).get('accuracy'))}</td>"
            f"<td>{_fmt((v.get('metrics') or {}).get('macro_f1'))}</td>"
            f"<td>{_fmt(v.get('train_seconds'))}</td><td>{_when(v.get('created_at'))}</td></tr>"
            for v in reversed(st["versions"])
        )
        job_rows = "".join(
            f"<tr class='{escape(j.get('status', ''))}'><td>{escape(j.get('kind', ''))}</td>"
            f"<td>{escape(j.get('status', ''))}</td><td>{escape(j.get('reason', ''))}</td>"
            f"<td>{_when(j.get('started_at'))}</td><td>{_fmt(j.get('seconds'))}</td>"
            f"<td>{escape(str(j.get('version') or ''))}</td>"
            f"<td>{escape(j.get('error', ''))}</td></tr>"
            for j in st["jobs"]
        )
        sections.append(f"""
<section id="project-{p}">
  <h2>Project {p}</h2>
  <p>Serving version: <b class="serving">{escape(st['serving_version'] or 'untrained')}</b>,
     labels: {st['labels']}, queue: {escape(str(st['queue']))}</p>
  <img class="curve" src="/status/{p}/curve.png" alt="learning curve of project {p}"
       width="600" height="320">
  <h3>Versions</h3>
  <table><tr><th>Version</th><th>Labels</th><th>Accuracy</th><th>Macro-F1</th>
    <th>Train s</th><th>Created</th></tr>{version_rows}</table>
  <h3>Jobs</h3>
  <table><tr><th>Job</th><th>Status</th><th>Reason</th><th>Started</th><th>Seconds</th>
    <th>Version</th><th>Error</th></tr>{job_rows}</table>
</section>""")
    body = "".join(sections) or "<p>No project has a model yet. Connect this backend in Label " \
        "Studio and submit annotations, or run <code>python -m ml_backend seed</code>.</p>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Active-learning backend</title>
<meta http-equiv="refresh" content="30">
<style>
 body {{ font-family: sans-serif; margin: 2em; color: #222; }}
 table {{ border-collapse: collapse; margin-bottom: 1em; }}
 td, th {{ border: 1px solid #ccc; padding: 4px 8px; font-size: 14px; }}
 tr.failed td {{ background: #fde2e2; }}
 section {{ margin-bottom: 3em; }}
</style></head>
<body><h1>Active-learning backend for Label Studio</h1>{body}</body></html>"""
