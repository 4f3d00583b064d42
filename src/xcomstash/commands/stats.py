"""``xcomstash stats``: what the XComs weigh, where, and how fast it grows."""

from __future__ import annotations

import argparse

from xcomstash.commands import _common

DESCRIPTION = """\
Counts and bytes of XComs by DAG, task and codec, inline (in the database) against stored
(in the object store, once per object with dedup), the compression ratio (from a sample of
object footers), the largest values, and growth per day. Reads the metadata database (or the
REST API with --api-url); reads no object bodies.
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = _common.add_command(
        sub,
        "stats",
        "counts and bytes by DAG, task, codec; inline vs stored; compression; largest; growth",
        DESCRIPTION,
    )
    parser.add_argument("--dag", metavar="PATTERN", help="only DAGs matching this glob")
    parser.add_argument("--top", type=int, default=10, metavar="N", help="rows per ranking (default 10)")
    parser.add_argument("--compression-sample", type=int, default=200, metavar="N",
                        help="objects whose footers are read for the compression ratio (default 200, -1: all)")
    _common.add_common_arguments(parser, api=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xcomstash.errors import XComStashError
    from xcomstash.maintenance.report import human_bytes
    from xcomstash.maintenance.rows import RowFilter
    from xcomstash.maintenance.stats import collect, location_usage

    try:
        store = _common.open_store(args)
        source = _common.row_source(args)
        with _common.progress_bars(args) as advance:
            report = collect(
                source.iter_rows(RowFilter(dag_pattern=args.dag)),
                store,
                top=args.top,
                layout_sample=args.compression_sample,
                progress=lambda what, n: advance("reading rows", n),
            )
            usage = location_usage(store)
    except XComStashError as exc:
        return _common.fail(str(exc))
    doc = report.to_json(top=args.top)
    if usage:
        doc["locations"] = usage
    ratio = report.compression_ratio
    summary = (
        f"stats: {report.rows:,} XComs, {report.inline.inline_count:,} inline "
        f"({human_bytes(report.inline.inline_bytes)}), {report.stored.stored_count:,} stored "
        f"({report.unique_objects:,} objects, {human_bytes(report.unique_bytes)})"
        + (f", compression {ratio:.2f}x" if ratio else "")
        + f" in {report.seconds:.1f}s"
    )

    def render() -> None:
        from rich.table import Table

        out = _common.console()

        def table(title: str, groups: dict) -> None:
            t = Table(title=title, title_justify="left")
            for c in ("", "inline", "inline bytes", "stored", "stored bytes"):
                t.add_column(c, justify="left" if not c else "right")
            for name, b in groups.items():
                t.add_row(name, f"{b['inline_count']:,}", human_bytes(b["inline_bytes"]),
                          f"{b['stored_count']:,}", human_bytes(b["stored_bytes"]))
            out.print(t)

        if usage:
            t = Table(title="by location", title_justify="left")
            for c in ("location", "objects", "bytes"):
                t.add_column(c, justify="left" if c == "location" else "right")
            for root, u in usage.items():
                t.add_row(root, f"{u['objects']:,}" if u["objects"] >= 0 else "unreachable",
                          human_bytes(u["bytes"]) if u["bytes"] >= 0 else "-")
            out.print(t)
        table("by DAG", doc["by_dag"])
        table(f"by task (top {args.top})", doc["by_task"])
        t = Table(title="by codec", title_justify="left")
        for c in ("codec", "count", "bytes"):
            t.add_column(c, justify="left" if c == "codec" else "right")
        for name, v in doc["by_codec"].items():
            t.add_row(name, f"{v['count']:,}", human_bytes(v["bytes"]))
        out.print(t)
        t = Table(title="largest values", title_justify="left")
        # The XCom is what an operator acts on: shown whole (folded), the summary cut first.
        t.add_column("bytes", justify="right", no_wrap=True)
        t.add_column("xcom", overflow="fold")
        t.add_column("value", max_width=40, overflow="ellipsis", no_wrap=True)
        for item in doc["largest"]:
            t.add_row(human_bytes(item["bytes"]), _common.xcom_label(item["xcom"]), item["summary"])
        out.print(t)
        t = Table(title="growth per day", title_justify="left")
        for c in ("day", "XComs", "bytes"):
            t.add_column(c, justify="left" if c == "day" else "right")
        for day, b in doc["by_day"].items():
            t.add_row(day, f"{b['inline_count'] + b['stored_count']:,}", human_bytes(b["inline_bytes"] + b["stored_bytes"]))
        out.print(t)

    _common.emit(args, doc, render, summary)
    # The record keeps more DAGs than the printed ranking: the overview shows each DAG's growth.
    return _common.record_run(store, "stats", report.to_json(top=max(args.top, 50)), summary, _common.EXIT_OK)
