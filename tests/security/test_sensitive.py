"""Detectors, masking and policies; findings never carry the matched text."""

from __future__ import annotations

import re

import pytest

from xcomstash.errors import SensitiveDataError
from xcomstash.security.detectors import _luhn_ok
from xcomstash.security.sensitive import MASK, REJECT, WARN, Finding, ScanLimits, Scanner, enforce

AWS = "AKIAIOSFODNN7EXAMPLE"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
GITHUB = "ghp_" + "a1B2c3D4e5" * 4
CARD = "4111 1111 1111 1111"


@pytest.mark.parametrize(
    "text,detector",
    [
        (f"key={AWS}", "aws-access-key"),
        (PEM, "private-key"),
        (f"auth {JWT}", "jwt"),
        (GITHUB, "github-token"),
        ("Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345", "token"),
        ("xoxb-123456789012-abcdefghij", "slack-token"),
        ("write to jane.doe+etl@example.co.uk please", "email"),
        (f"card {CARD}", "card-number"),
        ("5500-0000-0000-0004", "card-number"),
    ],
)
def test_each_detector_finds_its_pattern(text: str, detector: str) -> None:
    findings, complete = Scanner().scan_structure({"v": text})
    assert complete
    assert detector in {f.detector for f in findings}


@pytest.mark.parametrize(
    "text",
    ["4111 1111 1111 1112", "1234567890123", "0000000000000000", "AKIA123", "user at example dot com",
     "2026-11-23T10:00:00+00:00", "plain words only", "ghp_short"],
)
def test_near_misses_are_not_findings(text: str) -> None:
    assert Scanner().scan_structure([text])[0] == []


def test_luhn() -> None:
    assert _luhn_ok("4111111111111111") and not _luhn_ok("4111111111111112")


def test_sensitive_field_names_mask_whole_values_like_airflow() -> None:
    value = {"conn": {"Password": "p4ss-w0rd!", "host": "db.internal", "extra": {"api_key": ["a", "b"]}},
             "secret_token": None, "tokens_count": 3}
    masked, findings, _ = Scanner().mask_structure(value)
    assert masked == {"conn": {"Password": "***", "host": "db.internal", "extra": {"api_key": ["***", "***"]}},
                      "secret_token": None, "tokens_count": "***"}  # name rule: "token" in the name, like Airflow
    assert value["conn"]["Password"] == "p4ss-w0rd!"  # the input is not modified
    assert {f.where for f in findings} >= {"$.conn.Password", "$.conn.extra.api_key"}


def test_masking_replaces_only_the_matches_inside_text() -> None:
    masked, findings, _ = Scanner().mask_structure({"note": f"id {AWS} for ops@example.com, ok"})
    assert masked == {"note": "id *** for ***, ok"}
    assert [f.detector for f in findings] == ["aws-access-key", "email"]


def test_findings_and_errors_never_contain_the_secret() -> None:
    value = {"a": AWS, "b": [PEM], "password": "hunter2-hunter2"}
    findings, _ = Scanner().scan_structure(value)
    with pytest.raises(SensitiveDataError) as err:
        enforce(REJECT, findings, "value of XCom x")
    text = str(err.value) + repr(findings)
    for secret in (AWS, "BEGIN RSA", "hunter2"):
        assert secret not in text
    assert "aws-access-key at $.a" in text and "Rule sensitive_data = reject" in str(err.value)


def test_registered_secrets_from_the_masker_hook() -> None:
    pattern = re.compile(re.escape("s3cr3t-from-a-connection"))
    scanner = Scanner(registered=lambda: pattern)
    masked, findings, _ = scanner.mask_structure(["prefix s3cr3t-from-a-connection suffix"])
    assert masked == ["prefix *** suffix"] and findings[0].detector == "registered-secret"
    broken = Scanner(registered=lambda: (_ for _ in ()).throw(RuntimeError("masker down")))
    assert broken.scan_structure(["x"])[0] == []


def test_serde_envelope_keys_are_left_alone() -> None:
    value = {"__classname__": "builtins.tuple", "__version__": 1, "__data__": [AWS, 1]}
    masked, _, _ = Scanner().mask_structure(value)
    assert masked == {"__classname__": "builtins.tuple", "__version__": 1, "__data__": ["***", 1]}


def test_scan_stops_at_its_budget_and_says_so() -> None:
    scanner = Scanner(limits=ScanLimits(max_strings=10))
    findings, complete = scanner.scan_structure(["x"] * 10 + [AWS])
    assert findings == [] and not complete
    assert Scanner().scan_structure(["x"] * 10 + [AWS])[1]


def test_warn_logs_without_raising(caplog) -> None:
    enforce(WARN, [Finding("email", "$.a")], "value")
    enforce(MASK, [], "value")
    assert "email at $.a" in caplog.text


def test_pandas_string_columns_are_sampled_and_masked_whole_column() -> None:
    import pandas as pd

    n = 50_000
    df = pd.DataFrame({"n": range(n), "email": ["none"] * n, "api_key": ["k"] * n, "note": pd.Series(["x"] * n, dtype="string")})
    df.loc[0, "email"] = "a@example.com"
    df.loc[n - 1, "email"] = "z@example.com"  # unsampled rows are masked too once the column is hit
    masked, findings = Scanner(limits=ScanLimits(sample_rows=100)).mask_table(df)
    assert {f.detector for f in findings} == {"email", "sensitive-field"}
    assert masked.loc[0, "email"] == "***" and masked.loc[n - 1, "email"] == "***" and masked.loc[5, "email"] == "none"
    assert (masked["api_key"] == "***").all()
    assert masked["note"].dtype == df["note"].dtype and list(masked["n"]) == list(df["n"])
    assert df.loc[0, "email"] == "a@example.com"


def test_sampling_can_miss_a_secret_in_an_unsampled_row() -> None:
    """Documented limit: the table scan is sampled."""
    import pyarrow as pa

    rows = ["ok"] * 10_000
    rows[5_001] = AWS
    findings, _ = Scanner(limits=ScanLimits(sample_rows=100)).scan_table(pa.table({"s": rows}))
    assert findings == []


def test_arrow_and_polars_masking_keep_types() -> None:
    import polars as pl
    import pyarrow as pa

    table = pa.table({"s": pa.array([f"x {AWS}", "b", None], pa.string()), "d": pa.array(["a", JWT, "a"]).dictionary_encode(), "n": [1, 2, 3]})
    masked, findings = Scanner().mask_table(table)
    assert masked.schema == table.schema
    assert masked.column("s").to_pylist() == ["x ***", "b", None]
    assert masked.column("d").to_pylist() == ["a", "***", "a"]
    pmasked, _ = Scanner().mask_table(pl.from_arrow(table.select(["s", "n"])))
    assert pmasked["s"].to_list() == ["x ***", "b", None]
    batch_masked, _ = Scanner().mask_table(table.to_batches()[0])
    assert isinstance(batch_masked, pa.RecordBatch)


def test_secret_in_a_dict_key_is_reported_without_echoing_it_and_masked() -> None:
    masked, findings, _ = Scanner().mask_structure({"ok": {AWS: 1}})
    assert masked == {"ok": {"***": 1}}
    assert [str(f) for f in findings] == ["aws-access-key at $.ok[key #0]"]


def test_column_names_and_bytes_are_scanned() -> None:
    import pyarrow as pa

    findings, _ = Scanner().scan_table(pa.table({AWS: [1]}))
    assert findings and findings[0].detector == "aws-access-key" and AWS not in findings[0].where
    assert Scanner().scan_bytes(PEM.encode())[0].detector == "private-key"
    assert Scanner(limits=ScanLimits(max_bytes_scanned=10)).scan_bytes(b"x" * 20 + PEM.encode()) == []
