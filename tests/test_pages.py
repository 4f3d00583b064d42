"""The HTML of the XCom tab and the storage page: what comes from values, rows and records is
escaped, and each section shows what its document holds."""

from __future__ import annotations

from xcomstash import pages

TI = {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": None}
EVIL = "<script>alert(1)</script>"


def xcom(**fields) -> dict:
    return {"key": "return_value", "map_index": -1, **fields}


def test_values_keys_and_column_names_are_escaped() -> None:
    doc = {"task_instance": TI, "xcoms": [
        xcom(key=EVIL, stored={"location": "inline", "size": 3, "codec": "json"},
             preview={"kind": "table", "columns": [{"name": EVIL, "type": "string", "nullable": True}],
                      "rows": [[EVIL]], "num_rows": 1, "shown_rows": 1}),
        xcom(preview={"kind": "json", "text": EVIL}),
        xcom(error=EVIL),
    ]}
    html = pages.task_instance_page(doc)
    assert EVIL not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_tab_shows_facts_preview_and_why_a_value_was_not_previewed() -> None:
    stored = {"location": "store", "uri": "s3://b/k.xcs", "size": 2048, "body_bytes": 1024, "raw_bytes": 4096,
              "ratio": 4.0, "compression": "zstd", "codec": "numpy.npy", "encrypted": True, "key_id": "k1"}
    doc = {"task_instance": dict(TI, map_index=3), "xcoms": [
        xcom(map_index=3, stored=stored, preview={"kind": "array", "shape": [2, 3], "dtype": "int8", "order": "F",
                                                  "summary": {"nan": 0, "min": 1}},
             verification={"status": "corrupt", "finished": "2026-12-01T00:00:00Z", "detail": "digest"}),
        xcom(key="other", error="Not previewed: the value is encrypted"),
    ], "more": 5}
    html = pages.task_instance_page(doc)
    assert "return_value [map_index 3]" in html and "store: s3://b/k.xcs" in html and "zstd, ratio 4.00x" in html
    assert "yes (key k1)" in html and "corrupt (2026-12-01T00:00:00Z): digest" in html and "2 x 3" in html
    assert "data-testid='preview-error'>Not previewed: the value is encrypted" in html and "5 more XComs" in html
    assert "no XComs" in pages.task_instance_page({"task_instance": TI, "xcoms": []})


def test_the_storage_page_shows_growth_runs_checks_and_events() -> None:
    doc = {
        "stats": {"finished": "2026-12-02T00:00:00Z", "previous": "2026-12-01T00:00:00Z",
                  "by_dag": {"etl": {"objects": 3, "bytes": 4096, "objects_change": -1, "bytes_change": 2048}},
                  "largest": [{"bytes": 10, "summary": "dict", "xcom": {"dag_id": "etl", "run_id": "r", "task_id": "t",
                                                                          "map_index": -1, "key": "k"}}],
                  "totals": {"objects": 3, "bytes": 4096, "objects_change": -1, "bytes_change": 2048}},
        "runs": {"reconcile": None, "verify": {"finished": "x", "exit_code": 2, "summary": "1 corrupt"}},
        "checks": [{"name": "store reachable", "status": "fail", "detail": EVIL, "fix": "start it"}],
        "events": [{"ts": "t", "why": "pull denied", "xcom": {"dag_id": "etl"}, "actor": {"user": "bob", "via": "airflow ui"}}],
    }
    html = pages.overview_page(doc)
    assert "<td class='num down'>-1</td>" in html and "+2.0 KiB" in html
    assert "never run" in html and "<td class='warn'>2</td>" in html and "1 corrupt" in html
    assert "data-testid='checks'" in html and "store reachable" in html and EVIL not in html
    assert "bob (airflow ui)" in html
    hidden = pages.overview_page({"stats": {}, "runs": None, "events": []})
    assert "No <code>xcomstash stats</code> run recorded yet" in hidden and "every DAG" in hidden
    assert "data-testid='checks'" not in hidden


def test_an_error_page_names_its_status() -> None:
    html = pages.error_page(403, "You may not read the XComs of DAG 'x<y'.")
    assert "data-status='403'" in html and "x&lt;y" in html
