"""The status page people open at `/`: per project, what the job queue is doing, the learning
curve, how the serving version does per class (precision, recall, confusion matrix), labels
per class, every version and the job history. A version answering several questions (or a
multiple-choice one) gets these per question: a multiple-choice question's table has each
label's precision, recall and threshold, and its micro-/macro-F1 and subset accuracy.

Everything shown comes from `ml_backend.status.project_status`; all text from outside (class
names, job errors, reasons) is escaped.
"""

from __future__ import annotations

import time
from html import escape

from ml_backend.status_charts import RELIABLE_HELDOUT, accuracy_interval
from ml_backend.status_charts import learning_curve_png as learning_curve_png  # the route's

STYLE = """
 body { font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #222; max-width: 1100px; }
 h1 { font-size: 1.5em; } h2 { margin-top: 0; } h3 { margin: 1.2em 0 .4em; font-size: 1.05em; }
 section { border: 1px solid #ddd; border-radius: 6px; padding: 1em 1.4em; margin-bottom: 2em; }
 table { border-collapse: collapse; margin-bottom: .8em; }
 td, th { border: 1px solid #ccc; padding: 3px 8px; font-size: 13px; text-align: left; }
 th { background: #f3f3f3; white-space: nowrap; }
 td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
 td.nowrap { white-space: nowrap; }
 tr.failed td { background: #fde2e2; } tr.serving td { background: #eef5fc; }
 .queue li { margin: 2px 0; } .note { color: #666; font-size: 12px; }
 .row { display: flex; flex-wrap: wrap; gap: 2.5em; align-items: flex-start; }
 .row .note { max-width: 26em; }
 .bar { display: inline-block; height: 10px; background: #1f77b4; vertical-align: middle; }
 table.confusion td { width: 2.6em; text-align: center; }
 .badge { background: #1f77b4; color: #fff; border-radius: 4px; padding: 1px 6px; }
 .warn { color: #a15c00; }
 .muted { color: #666; font-size: 0.9em; }
"""


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""


def _num(value: object, digits: int = 3) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else escape(str(value))


def _headline(st: dict) -> str:
    held, trained = st.get("labels"), st.get("labels_trained") or 0
    if held is None:
        labels = (f"labelled tasks in Label Studio unknown "
                  f"<span class='warn'>({escape(st.get('labels_error') or 'not reported')})</span>")
    else:
        labels = f"Label Studio holds <b>{held}</b> labelled tasks"
        if st["serving_version"]:
            labels += (f"; the serving version was trained on <b>{st.get('labels_serving') or 0}"
                       f"</b> of them")
        newest = st["versions"][-1]["version"] if st["versions"] else None
        if newest and held != trained:
            labels += (f"; the newest version ({escape(newest)}) was trained and evaluated on "
                       f"{trained}")
            if held > trained:
                labels += f" (<b>{held - trained}</b> not in a version yet)"
    serving = escape(st["serving_version"] or "untrained")
    return f"<p>Serving <span class='badge serving'>{serving}</span> · {labels}</p>"


def _queue(st: dict) -> str:
    items = "".join(f"<li>{escape(s)}</li>" for s in st["queue"].get("summary", []))
    return f"<h3>Job queue</h3><ul class='queue'>{items}</ul>"


def _per_class(version: dict) -> str:
    """Labels, precision, recall and support per class, and the confusion matrix, of one
    version on its held-out tasks."""
    metrics = version.get("metrics") or {}
    counts = version.get("label_counts") or {}
    per_class = metrics.get("per_class") or {}
    classes = list(per_class) or list(counts)
    name = escape(version["version"])
    rows = _class_rows(classes, counts, per_class)
    n = metrics.get("n") or 0
    caveat = (f" <span class='warn'>(only {n} held-out tasks: read these as rough)</span>"
              if 0 < n < RELIABLE_HELDOUT else "")
    head = (f"<h3>Per class: {name} (serving), on {n} held-out tasks{caveat}</h3>" if n else
            f"<h3>Per class: {name} (serving)</h3><p class='note'>"
            f"{escape(version.get('metrics_note') or 'not evaluated')}</p>")
    table = ("<table class='per-class'><tr><th>Class</th><th>Labels</th><th></th>"
             "<th>Precision</th><th>Recall</th><th>Held-out</th></tr>" + rows + "</table>")
    return head + f"<div class='row'><div>{table}</div>{_confusion(metrics)}</div>"


def _class_rows(classes: list[str], counts: dict, per_class: dict,
                thresholds: dict | None = None) -> str:
    """Table rows per class: labels (with a bar), held-out precision, recall and support, and
    a multiple-choice label's threshold when `thresholds` is given."""
    top = max(counts.values(), default=0) or 1
    return "".join(
        f"<tr><td>{escape(c)}</td><td class='num'>{counts.get(c, '')}</td>"
        f"<td><span class='bar' style='width:{80 * counts.get(c, 0) / top:.0f}px'></span></td>"
        f"<td class='num'>{_num((per_class.get(c) or {}).get('precision'), 2)}</td>"
        f"<td class='num'>{_num((per_class.get(c) or {}).get('recall'), 2)}</td>"
        f"<td class='num'>{_num((per_class.get(c) or {}).get('support'))}</td>"
        + (f"<td class='num'>{_num(thresholds.get(c, 0.5), 2)}</td>" if thresholds is not None
           else "")
        + "</tr>" for c in classes)


def _per_question(version: dict) -> str:
    """`_per_class` for each question of a version answering several (or a multiple-choice
    one): its metrics on the held-out tasks that answer it, labels and per-label precision and
    recall (with the threshold a multiple-choice label is pre-annotated at)."""
    metrics = version.get("metrics") or {}
    name = escape(version["version"])
    n = metrics.get("n") or 0
    caveat = (f" <span class='warn'>(only {n} held-out tasks: read these as rough)</span>"
              if 0 < n < RELIABLE_HELDOUT else "")
    out = [f"<h3>Per question: {name} (serving){caveat}</h3>"]
    if not n:
        out.append(f"<p class='note'>{escape(version.get('metrics_note') or 'not evaluated')}"
                   "</p>")
    per_question = metrics.get("questions") or {}
    all_counts = version.get("label_counts") or {}
    for q in version.get("questions") or []:
        qm = per_question.get(q["name"]) or {}
        out.append(_question_table(q, qm, all_counts.get(q["name"]) or {}))
    return "".join(out)


def _question_table(q: dict, metrics: dict, counts: dict) -> str:
    multiple = bool(q.get("multiple"))
    per_class = metrics.get("per_class") or {}
    classes = list(q.get("classes") or []) or list(per_class) or list(counts)
    thresholds = dict(zip(classes, q.get("thresholds") or [])) if multiple else {}
    rows = _class_rows(classes, counts, per_class, thresholds if multiple else None)
    kind = "multiple-choice" if multiple else "single-choice"
    n = metrics.get("n") or 0
    if not n:
        said = "no held-out task answers it yet"
    elif multiple:
        said = (f"on {n} held-out tasks: micro-F1 {_num(metrics.get('micro_f1'), 2)}, macro-F1 "
                f"{_num(metrics.get('macro_f1'), 2)}, subset accuracy "
                f"{_num(metrics.get('subset_accuracy'), 2)}")
    else:
        said = (f"on {n} held-out tasks: accuracy {_num(metrics.get('accuracy'), 2)}, macro-F1 "
                f"{_num(metrics.get('macro_f1'), 2)}")
    table = (f"<table class='per-class' data-question='{escape(q['name'])}'><tr>"
             f"<th>{'Label' if multiple else 'Class'}</th><th>Labels</th><th></th>"
             "<th>Precision</th><th>Recall</th><th>Held-out</th>"
             + ("<th>Threshold</th>" if multiple else "") + "</tr>" + rows + "</table>")
    return (f"<h3>{escape(q['name'])} <span class='muted'>({kind})</span></h3>"
            f"<p class='note'>{said}</p><div class='row'><div>{table}</div>"
            f"{'' if multiple else _confusion(metrics)}</div>")


def _confusion(metrics: dict) -> str:
    """The confusion matrix as a table, each cell shaded by its share of its true class."""
    matrix, classes = metrics.get("confusion") or [], list(metrics.get("per_class") or {})
    if not matrix or len(matrix) != len(classes):
        return ""
    cells = []
    for c, row in zip(classes, matrix):
        total = sum(row) or 1
        tds = []
        for j, v in enumerate(row):
            share = v / total
            hue = "31,119,180" if classes[j] == c else "214,39,40"
            colour = "#fff" if share > 0.6 else "#222"
            tds.append(f"<td style='background:rgba({hue},{share:.2f});color:{colour}'>{v}</td>")
        cells.append(f"<tr><th>{escape(c)}</th>{''.join(tds)}</tr>")
    header = "".join(f"<th>{escape(c)}</th>" for c in classes)
    return (f"<div><table class='confusion'><tr><th>true \\ predicted</th>{header}</tr>"
            f"{''.join(cells)}</table><p class='note'>Rows: the true class of each held-out "
            "task; columns: the class predicted. Blue: right; red: confused.</p></div>")


def _version_note(v: dict) -> str:
    notes = [v.get("metrics_note")]
    promotion = v.get("promotion") or {}
    if promotion and not promotion.get("promoted", True):
        notes.append(f"not promoted: {promotion.get('reason', '')}")
    if v.get("rolled_back_from"):
        notes.append(f"served again by rollback (from {v['rolled_back_from']})")
    if v.get("skipped"):
        notes.append("left out: " + ", ".join(f"{n} {k}" for k, n in v["skipped"].items()))
    return escape("; ".join(n for n in notes if n))


def _versions(st: dict) -> str:
    rows = []
    for v in reversed(st["versions"]):
        iv = accuracy_interval(v.get("metrics"))
        acc = f"{iv[0]:.2f} ({iv[1]:.2f}–{iv[2]:.2f})" if iv else ""
        serving = " (serving)" if v["serving"] else ""
        if v.get("label_studio_version", v["version"]) != v["version"]:
            serving += (f" <span class='muted'>{escape(v['label_studio_version'])} in Label "
                        f"Studio</span>")
        rows.append(
            f"<tr class='{'serving' if v['serving'] else ''}'>"
            f"<td class='nowrap'>{escape(v['version'])}{serving}</td>"
            f"<td class='num'>{_num(v['n_labels'])}</td>"
            f"<td class='num'>{v.get('n_heldout') or ''}</td><td class='num'>{acc}</td>"
            f"<td class='num'>{_macro_f1(v)}</td>"
            f"<td class='num'>{_num(v.get('train_seconds'), 2)}</td>"
            f"<td class='nowrap'>{_when(v.get('created_at'))}</td>"
            f"<td class='note'>{_version_note(v)}</td></tr>")
    return ("<h3>Versions</h3><table><tr><th>Version</th><th>Labels</th><th>Held-out</th>"
            "<th>Accuracy (95% CI)</th><th>Macro-F1</th><th>Train s</th><th>Created</th>"
            f"<th>Note</th></tr>{''.join(rows)}</table>")


def _macro_f1(v: dict) -> str:
    """Macro-F1; for several questions their mean, then each question's."""
    metrics = v.get("metrics") or {}
    out = _num(metrics.get("macro_f1"), 2)
    per = metrics.get("questions") or {}
    if v.get("several_questions") and per:
        each = ", ".join(f"{escape(q)} {_num((m or {}).get('macro_f1'), 2) or '–'}"
                         for q, m in per.items())
        out += f" <span class='muted'>({each})</span>"
    return out


def _jobs(st: dict) -> str:
    rows = "".join(
        f"<tr class='{escape(j.get('status', ''))}'><td>{escape(j.get('kind', ''))}</td>"
        f"<td>{escape(j.get('status', ''))}</td><td>{escape(j.get('reason', ''))}</td>"
        f"<td class='nowrap'>{_when(j.get('started_at'))}</td>"
        f"<td class='num'>{_num(j.get('seconds'), 1)}</td>"
        f"<td>{escape(str(j.get('version') or ''))}</td>"
        f"<td>{escape(j.get('error', ''))}</td></tr>"
        for j in st["jobs"])
    if not rows:
        return "<h3>Recent jobs</h3><p class='note'>none recorded</p>"
    return ("<h3>Recent jobs</h3><table><tr><th>Job</th><th>Status</th><th>Reason</th>"
            "<th>Started</th><th>Seconds</th><th>Version</th><th>Error</th></tr>"
            f"{rows}</table>")


def project_section(st: dict) -> str:
    p = st["project"]
    serving = next((v for v in st["versions"] if v["serving"]), None)
    curve = (f"<img class='curve' src='/status/{p}/curve.png' alt='learning curve of project "
             f"{p}' width='700' height='360'>" if st["versions"] else
             "<p class='note'>No version yet: the first retrain after a submit makes one.</p>")
    return (f"<section id='project-{p}'><h2>Project {p}</h2>{_headline(st)}{_queue(st)}"
            f"<h3>Learning curve</h3>{curve}{_serving_detail(serving)}"
            f"{_versions(st)}{_jobs(st)}</section>")


def _serving_detail(serving: dict | None) -> str:
    if serving is None:
        return ""
    return _per_question(serving) if serving.get("several_questions") else _per_class(serving)


def render(statuses: list[dict]) -> str:
    """The whole page for every project the backend knows."""
    body = "".join(project_section(st) for st in statuses) or (
        "<p>No project has a model yet. Connect this backend in Label Studio and submit "
        "annotations, or run <code>python -m ml_backend seed</code>.</p>")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Active-learning backend</title>
<meta http-equiv="refresh" content="30"><style>{STYLE}</style></head>
<body><h1>Active-learning backend for Label Studio</h1>
<p class="note">Refreshes every 30 s. JSON: <code>/status/&lt;project&gt;</code>.</p>
{body}</body></html>"""
