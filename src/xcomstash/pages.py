"""Server-rendered HTML of the two pages the Airflow UI shows (no Airflow imports, no build
step): the XCom tab of a task instance and the storage overview. They take the JSON
documents the plugin's API serves (:mod:`xcomstash.airflow.ui`) and render them; everything
that comes from a value, a row or a record is escaped.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any, Iterable

from xcomstash.maintenance.report import human_bytes

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;font-size:14px;margin:12px;color:#1a202c;background:#fff}
h1{font-size:18px;margin:0 0 8px} h2{font-size:16px;margin:18px 0 6px} h3{font-size:14px;margin:10px 0 4px}
table{border-collapse:collapse;margin:4px 0 10px;max-width:100%} th,td{border:1px solid #e2e8f0;padding:3px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f7fafc;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums}
.xcom{border:1px solid #cbd5e0;border-radius:6px;padding:8px 12px;margin:0 0 14px}
.facts td:first-child{color:#4a5568;white-space:nowrap} .muted{color:#718096} .note{color:#975a16;margin:4px 0}
.error{color:#9b2c2c;background:#fff5f5;border:1px solid #feb2b2;border-radius:4px;padding:6px 10px;margin:4px 0}
pre{background:#f7fafc;border:1px solid #e2e8f0;padding:6px 8px;max-height:420px;overflow:auto;font-size:12px}
.dtype{color:#718096;font-weight:400;font-size:12px;display:block} .up{color:#2f855a} .down{color:#9b2c2c}
.ok{color:#2f855a} .warn{color:#975a16} .fail{color:#9b2c2c}
"""


def page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def error_page(status: int, message: str) -> str:
    return page(
        f"{status}",
        f"<h1>{status}</h1><div class='error' data-testid='error' data-status='{status}'>{escape(message)}</div>",
    )


# ----------------------------------------------------------------- task instance tab


def task_instance_page(doc: dict[str, Any]) -> str:
    """The tab: one box per XCom of the task instance (every map index)."""
    ti = doc["task_instance"]
    where = f"{ti['dag_id']} / {ti['run_id']} / {ti['task_id']}" + (
        f" [{ti['map_index']}]" if ti.get("map_index") is not None else ""
    )
    parts = [f"<h1>XComs of {escape(where)}</h1>"]
    xcoms = doc.get("xcoms", [])
    if not xcoms:
        parts.append("<p class='muted' data-testid='empty'>This task instance has no XComs.</p>")
    for x in xcoms:
        parts.append(_xcom_box(x))
    more = doc.get("more")
    if more:
        parts.append(f"<p class='muted'>{more:,} more XComs not shown (use offset=…).</p>")
    return page(f"XComs of {where}", "".join(parts))


def _xcom_box(x: dict[str, Any]) -> str:
    label = x["key"] + (f" [map_index {x['map_index']}]" if x.get("map_index", -1) >= 0 else "")
    out = [f"<div class='xcom' data-testid='xcom' data-key='{escape(x['key'])}' data-map-index='{x.get('map_index', -1)}'>"]
    out.append(f"<h2>{escape(label)}</h2>")
    stored = x.get("stored") or {}
    facts: list[tuple[str, str]] = []
    if stored:
        if stored.get("location") == "inline":
            facts.append(("where", "inline (in the Airflow database)"))
        else:
            facts.append(("where", f"store: {stored.get('uri', '')}"))
        facts.append(("size", _size(stored.get("size"))))
        if stored.get("body_bytes") is not None:
            facts.append(("stored bytes", _size(stored.get("body_bytes"))))
            facts.append(("uncompressed", _size(stored.get("raw_bytes"))))
            ratio = stored.get("ratio")
            facts.append(("compression", f"{stored.get('compression') or '-'}" + (f", ratio {ratio:.2f}x" if ratio else "")))
        facts.append(("codec", stored.get("codec") or "-"))
        if stored.get("python_type"):
            facts.append(("type", stored["python_type"]))
        if stored.get("location") == "store":
            facts.append(("encryption", f"yes (key {stored.get('key_id') or '?'})" if stored.get("encrypted") else "no"))
        if stored.get("readers"):
            facts.append(("readers", json.dumps(stored["readers"])))
    verification = x.get("verification")
    if verification:
        facts.append(("last verification", f"{verification.get('status')} ({verification.get('finished')})"
                      + (f": {verification['detail']}" if verification.get("detail") else "")))
    elif stored.get("location") == "store":
        facts.append(("last verification", "never (no xcomstash verify run recorded)"))
    read = x.get("read") or {}
    if read:
        facts.append(("read for this preview",
                      f"{_size(read.get('bytes_fetched'))} in {read.get('frames_fetched')} of {read.get('frames_total')} frames"))
    if facts:
        out.append("<table class='facts' data-testid='facts'>")
        for name, value in facts:
            out.append(f"<tr><td>{escape(name)}</td><td data-fact='{escape(name)}'>{escape(str(value))}</td></tr>")
        out.append("</table>")
    if x.get("error"):
        out.append(f"<div class='error' data-testid='preview-error'>{escape(x['error'])}</div>")
    preview = x.get("preview")
    if preview:
        out.append(_preview(preview))
    out.append("</div>")
    return "".join(out)


def _preview(p: dict[str, Any]) -> str:
    kind = p.get("kind")
    out = [f"<div data-testid='preview' data-kind='{escape(str(kind))}'>"]
    if kind == "table":
        rows_note = f"{p.get('num_rows', 0):,} rows" + (" (estimated)" if p.get("num_rows_estimated") else "")
        out.append(f"<h3>Table: <span data-testid='num-rows'>{escape(rows_note)}</span>, "
                   f"{len(p.get('columns', []))} columns; first {p.get('shown_rows', 0)} rows</h3>")
        out.append("<table data-testid='preview-table'><thead><tr>")
        for c in p.get("columns", []):
            detail = c.get("dtype") or c.get("type")
            null = "" if c.get("nullable", True) else ", not null"
            out.append(f"<th data-column='{escape(c['name'])}'>{escape(c['name'])}"
                       f"<span class='dtype'>{escape(str(detail))}{null}</span></th>")
        out.append("</tr></thead><tbody>")
        for row in p.get("rows", []):
            out.append("<tr>" + "".join(_cell(v) for v in row) + "</tr>")
        out.append("</tbody></table>")
        skipped = [c for c in p.get("columns", []) if c.get("note")]
        for c in skipped:
            out.append(f"<div class='note'>{escape(c['name'])}: {escape(c['note'])}</div>")
    elif kind == "array":
        out.append("<table data-testid='preview-array'>")
        out.append(f"<tr><td>shape</td><td>{escape(' x '.join(str(n) for n in p.get('shape', [])) or 'scalar')}</td></tr>")
        out.append(f"<tr><td>dtype</td><td>{escape(str(p.get('dtype')))}</td></tr>")
        out.append(f"<tr><td>memory order</td><td>{escape(str(p.get('order')))}</td></tr>")
        for name, value in (p.get("summary") or {}).items():
            out.append(f"<tr><td>{escape(name)}</td><td class='num'>{escape(str(value))}</td></tr>")
        out.append("</table>")
    elif kind == "json":
        out.append(f"<pre data-testid='preview-json'>{escape(p.get('text', ''))}</pre>")
    elif kind == "bytes":
        out.append(f"<h3>{p.get('length', 0):,} bytes; first {p.get('shown', 0):,} as hex</h3>")
        out.append(f"<pre data-testid='preview-hex'>{escape(p.get('hex', ''))}</pre>")
    if p.get("note"):
        out.append(f"<div class='note'>{escape(p['note'])}</div>")
    out.append("</div>")
    return "".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return "<td class='muted'>null</td>"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"<td class='num'>{escape(str(value))}</td>"
    return f"<td>{escape(str(value))}</td>"


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "-"
    return f"{human_bytes(n)} ({n:,} bytes)" if n >= 1024 else f"{n:,} bytes"


# ----------------------------------------------------------------------- overview


def overview_page(doc: dict[str, Any]) -> str:
    stats = doc.get("stats", {})
    parts = ["<h1>XCom storage</h1>"]
    if stats.get("finished"):
        since = f"; change since {stats['previous']}" if stats.get("previous") else ""
        parts.append(f"<p class='muted'>From the xcomstash stats run of {escape(stats['finished'])}{escape(since)}.</p>")
    else:
        parts.append("<p class='muted' data-testid='no-stats'>No <code>xcomstash stats</code> run recorded yet.</p>")
    totals = stats.get("totals") or {}
    parts.append("<h2>By DAG</h2><table data-testid='by-dag'><thead><tr><th>DAG</th><th>XComs</th><th>bytes</th>"
                 "<th>change (XComs)</th><th>change (bytes)</th></tr></thead><tbody>")
    for dag, d in (stats.get("by_dag") or {}).items():
        parts.append(
            f"<tr data-dag='{escape(dag)}'><td>{escape(dag)}</td><td class='num'>{d['objects']:,}</td>"
            f"<td class='num'>{escape(_size(d['bytes']))}</td>{_change(d.get('objects_change'), False)}"
            f"{_change(d.get('bytes_change'), True)}</tr>"
        )
    if totals:
        parts.append(
            f"<tr><th>total</th><th class='num'>{totals.get('objects', 0):,}</th>"
            f"<th class='num'>{escape(_size(totals.get('bytes', 0)))}</th>{_change(totals.get('objects_change'), False)}"
            f"{_change(totals.get('bytes_change'), True)}</tr>"
        )
    parts.append("</tbody></table>")
    parts.append("<h2>Largest values</h2><table data-testid='largest'><thead><tr><th>size</th><th>value</th>"
                 "<th>XCom</th></tr></thead><tbody>")
    for item in stats.get("largest") or []:
        x = item.get("xcom") or {}
        where = f"{x.get('dag_id')} / {x.get('run_id')} / {x.get('task_id')}" + (
            f" [{x.get('map_index')}]" if (x.get("map_index") or -1) >= 0 else "") + f" / {x.get('key')}"
        parts.append(f"<tr><td class='num'>{escape(_size(item.get('bytes')))}</td><td>{escape(str(item.get('summary', '')))}</td>"
                     f"<td>{escape(where)}</td></tr>")
    parts.append("</tbody></table>")
    parts.append("<h2>Maintenance</h2><table data-testid='runs'><thead><tr><th>command</th><th>last run</th>"
                 "<th>exit</th><th>result</th></tr></thead><tbody>")
    runs = doc.get("runs")
    if runs is None:
        parts.append("<tr><td colspan='4' class='muted'>Shown to users who may read every DAG's XComs.</td></tr>")
    else:
        for command, run in runs.items():
            if run is None:
                parts.append(f"<tr data-command='{command}'><td>{command}</td><td colspan='3' class='muted'>never run</td></tr>")
                continue
            status = "ok" if run.get("exit_code") == 0 else "warn" if run.get("exit_code") == 2 else "fail"
            parts.append(
                f"<tr data-command='{command}'><td>{command}{' (dry run)' if run.get('dry_run') else ''}</td>"
                f"<td>{escape(str(run.get('finished')))}</td><td class='{status}'>{escape(str(run.get('exit_code')))}</td>"
                f"<td>{escape(str(run.get('summary', '')))}</td></tr>"
            )
    parts.append("</tbody></table>")
    checks = doc.get("checks")
    if checks is not None:
        parts.append("<h2>Checks</h2><table data-testid='checks'><thead><tr><th>check</th><th>status</th>"
                     "<th>detail</th><th>fix</th></tr></thead><tbody>")
        for c in checks:
            parts.append(f"<tr><td>{escape(str(c.get('name')))}</td><td class='{escape(str(c.get('status')))}'>"
                         f"{escape(str(c.get('status')))}</td><td>{escape(str(c.get('detail', '')))}</td>"
                         f"<td>{escape(str(c.get('fix', '')))}</td></tr>")
        parts.append("</tbody></table>")
    parts.append("<h2>Recent events worth a look</h2><table data-testid='events'><thead><tr><th>when</th><th>what</th>"
                 "<th>XCom</th><th>who</th><th>error</th></tr></thead><tbody>")
    events = doc.get("events") or []
    if not events:
        parts.append("<tr><td colspan='5' class='muted'>None in the audit log of the last days.</td></tr>")
    for e in events:
        x = e.get("xcom") or {}
        parts.append(
            f"<tr><td>{escape(str(e.get('ts')))}</td><td>{escape(str(e.get('why')))}</td>"
            f"<td>{escape(_xcom_label(x))}</td><td>{escape(_actor_label(e.get('actor') or {}))}</td>"
            f"<td>{escape(str(e.get('error', '')))}</td></tr>"
        )
    parts.append("</tbody></table>")
    return page("XCom storage", "".join(parts))


def _change(value: Any, as_bytes: bool) -> str:
    if value is None:
        return "<td class='muted'>-</td>"
    sign = "+" if value > 0 else ""
    text = f"{sign}{human_bytes(value)}" if as_bytes else f"{sign}{value:,}"
    css = "up" if value > 0 else "down" if value < 0 else "muted"
    return f"<td class='num {css}'>{escape(text)}</td>"


def _xcom_label(x: dict[str, Any]) -> str:
    parts: Iterable[Any] = (x.get(k) for k in ("dag_id", "run_id", "task_id", "key"))
    return " / ".join(str(p) for p in parts if p is not None)


def _actor_label(actor: dict[str, Any]) -> str:
    if "user" in actor:
        return f"{actor['user']}" + (f" ({actor['via']})" if actor.get("via") else "")
    if "command" in actor:
        return str(actor["command"])
    if "task_id" in actor:
        return f"task {actor.get('dag_id')}.{actor.get('task_id')}"
    return "-"
