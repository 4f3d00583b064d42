"""What the sensitive-data scan catches and what it leaves alone, through the real engine
(local store) where it matters.

Found on a real deployment with ``sensitive_data = reject``: a raw AWS secret access key in
free text, a Fernet key under ``fernet_key`` and a password under ``pwd`` were stored in
clear. They are rejected under ``reject`` and masked under ``mask`` (JSON values and table
string columns), while realistic data full of random-looking strings (UUIDs, digests, base64
payloads, URLs, dates, paths) is not flagged at all.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
import subprocess
import sys
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from cryptography.fernet import Fernet

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.errors import SensitiveDataError
from xcomstash.security.guard import Guard, SecurityConfig
from xcomstash.security.rules import Rules, ValueRule
from xcomstash.security.sensitive import ScanLimits, Scanner
from xcomstash.stores import open_store

COORD = XComCoordinate("ops_rotation", "run_1", "rotate", -1, "return_value")

#: AWS's documented example secret access key, as the attacker used it: in a sentence.
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#: A real Fernet key, fixed: parametrized test ids must be the same in every xdist worker.
FERNET_KEY = "xKlStxSlSb1Zv5yVJ8Tl2VAWR04K8Gajg89JkbH_Fj4="
assert len(Fernet(FERNET_KEY.encode())._signing_key) == 16  # a valid key
PASSWORD = "Tr0ub4dor&3-ops"

LEAKS: dict[str, dict[str, Any]] = {
    "aws secret key in free text": {"note": f"rotated the deploy user; new secret access key {AWS_SECRET} (old one revoked)"},
    "fernet key under fernet_key": {"component": "scheduler", "fernet_key": FERNET_KEY},
    "password under pwd": {"host": "db.internal", "user": "etl", "pwd": PASSWORD},
}
SECRETS = (AWS_SECRET, FERNET_KEY, PASSWORD)


def engine(root: Path, policy: str, *, threshold: int, scanner: Scanner | None = None) -> Engine:
    config = StashConfig(store_url=f"file://{root}", threshold=threshold, read_ahead=False)
    security: dict[str, Any] = {"rules": Rules(ValueRule(sensitive_data=policy))}
    if scanner is not None:
        security["scanner"] = scanner
    return Engine(config, open_store(config.store_url), guard=Guard(SecurityConfig(**security)))


def stored_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("threshold", [1 << 20, 0], ids=["inline", "offloaded"])
@pytest.mark.parametrize("leak", list(LEAKS))
def test_leaked_secrets_are_rejected_under_reject(tmp_path, leak: str, threshold: int) -> None:
    reject = engine(tmp_path / "store", "reject", threshold=threshold)
    with pytest.raises(SensitiveDataError) as err:
        reject.serialize(LEAKS[leak], COORD)
    message = str(err.value)
    assert "sensitive_data = reject" in message
    for secret in SECRETS:
        assert secret not in message
        assert secret.encode() not in stored_bytes(tmp_path / "store")


def test_leaked_secrets_are_named_by_detector_and_path() -> None:
    found = {leak: [str(f) for f in Scanner().scan_structure(value)[0]] for leak, value in LEAKS.items()}
    assert found == {
        "aws secret key in free text": ["aws-secret-access-key at $.note"],
        "fernet key under fernet_key": ["high-entropy-value at $.fernet_key"],
        "password under pwd": ["sensitive-field at $.pwd"],
    }


@pytest.mark.parametrize("threshold", [1 << 20, 0], ids=["inline", "offloaded"])
def test_leaked_secrets_are_masked_under_mask(tmp_path, threshold: int) -> None:
    mask = engine(tmp_path / "store", "mask", threshold=threshold)
    value = list(LEAKS.values())
    row = mask.serialize(value, COORD)
    assert mask.deserialize(row, COORD) == [
        {"note": "rotated the deploy user; new secret access key *** (old one revoked)"},
        {"component": "scheduler", "fernet_key": "***"},
        {"host": "db.internal", "user": "etl", "pwd": "***"},
    ]
    text = json.dumps(row).encode() + stored_bytes(tmp_path / "store")
    for secret in SECRETS:
        assert secret.encode() not in text


def leaky_frame(n: int = 5_000) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "id": [str(uuid.UUID(int=i)) for i in range(n)],
            "note": ["nightly rotation ok"] * n,
            "fernet_key": [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)],  # digests: not keys
            "pwd": [None] * n,
            "amount": range(n),
        }
    )
    frame.loc[0, "note"] = f"new secret access key {AWS_SECRET}"
    frame.loc[n - 1, "note"] = f"new secret access key {AWS_SECRET}"  # an unsampled row: masked with its column
    frame.loc[50, "fernet_key"] = FERNET_KEY  # a sampled row (every 5th, or every 50th)
    frame.loc[20, "pwd"] = PASSWORD
    return frame


def test_leaked_secrets_in_table_string_columns_are_rejected_and_masked(tmp_path) -> None:
    frame = leaky_frame()
    with pytest.raises(SensitiveDataError) as err:
        engine(tmp_path / "r", "reject", threshold=0).serialize(frame, COORD)
    for finding in ("aws-secret-access-key at column 'note' row 0", "high-entropy-value at column 'fernet_key' row 50",
                    "sensitive-field at column 'pwd'"):
        assert finding in str(err.value)
    assert not any(p.is_file() for p in (tmp_path / "r").rglob("*"))

    mask = engine(tmp_path / "m", "mask", threshold=0, scanner=Scanner(limits=ScanLimits(sample_rows=100)))
    row = mask.serialize(frame, COORD)
    masked = mask.deserialize(row, COORD)
    assert masked.loc[0, "note"] == "new secret access key ***" and masked.loc[len(frame) - 1, "note"] == "new secret access key ***"
    assert masked.loc[1, "note"] == "nightly rotation ok"
    assert masked.loc[50, "fernet_key"] == "***" and masked.loc[51, "fernet_key"] == frame.loc[51, "fernet_key"]
    assert masked.loc[20, "pwd"] == "***" and masked["pwd"].isna().sum() == len(frame) - 1
    assert list(masked["amount"]) == list(frame["amount"]) and list(masked["id"]) == list(frame["id"])
    stored = stored_bytes(tmp_path / "m")
    for secret in SECRETS:
        assert secret.encode() not in stored


def test_arrow_tables_are_masked_the_same_way() -> None:
    table = pa.Table.from_pandas(leaky_frame(60), preserve_index=False)
    masked, findings = Scanner().mask_table(table)
    assert {f.detector for f in findings} == {"aws-secret-access-key", "high-entropy-value", "sensitive-field"}
    assert masked.schema == table.schema
    assert masked.column("note").to_pylist()[0] == "new secret access key ***"
    assert masked.column("fernet_key").to_pylist()[50] == "***"


@pytest.mark.parametrize(
    "text,detector",
    [
        ("DB_PASSWORD=hunter2-prod", "secret-keyword"),
        ('connect(user="etl", password="s3cr3t-Pa55")', "secret-keyword"),
        ("pwd: Tr0ub4dor&3 for the replica", "secret-keyword"),
        ("postgresql://etl:s3cr3t-Pa55@db.internal:5432/warehouse", "basic-auth-credentials"),
        ("export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws-secret-access-key"),
        (f"FERNET_KEY={FERNET_KEY}", "high-entropy-value"),
    ],
)
def test_secrets_in_config_like_text(text: str, detector: str) -> None:
    findings, _ = Scanner().scan_structure([text])
    assert detector in {f.detector for f in findings}, findings
    masked, _, _ = Scanner().mask_structure([text])
    assert "hunter2" not in masked[0] and "s3cr3t" not in masked[0] and "Tr0ub4dor" not in masked[0]
    assert AWS_SECRET not in masked[0] and FERNET_KEY not in masked[0]


@pytest.mark.parametrize(
    "text",
    ["password: ${DB_PASSWORD}", "password={{ var.value.db_password }}", "password: None", "password=***",
     "please reset your password", "the password field is required"],
)
def test_placeholders_and_prose_around_keywords_are_not_findings(text: str) -> None:
    assert Scanner().scan_structure([text])[0] == []


# ------------------------------------------------------------------ realistic data


def realistic_columns(n: int = 2_000) -> dict[str, list[str]]:
    """String columns as pipelines return them: random-looking, and not secret."""
    rng = random.Random(20261202)

    def rbytes(k: int) -> bytes:
        return rng.randbytes(k)

    uuids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]
    day0, t0 = date(2025, 1, 1), datetime(2025, 1, 1)
    return {
        "uuid": uuids,
        "uuid_hex": [uuid.UUID(u).hex for u in uuids],
        "sha256": [hashlib.sha256(rbytes(16)).hexdigest() for _ in range(n)],
        "sha1": [hashlib.sha1(rbytes(16)).hexdigest() for _ in range(n)],
        "md5": [hashlib.md5(rbytes(16)).hexdigest() for _ in range(n)],
        "digest_b64": [base64.b64encode(hashlib.sha256(rbytes(8)).digest()).decode() for _ in range(n)],
        # Base64 of random bytes, of the sizes payloads come in (a standalone 30-byte one is a
        # known false positive: test_a_lone_40_character_base64_word_is_taken_for_an_aws_secret).
        "payload": [base64.b64encode(rbytes(rng.choice([16, 24, 32, 48, 64, 100, 256, 1024]))).decode() for _ in range(n)],
        "payload_urlsafe": [base64.urlsafe_b64encode(rbytes(rng.choice([16, 32, 64, 128]))).decode().rstrip("=") for _ in range(n)],
        "url": [f"https://api.example.com/v2/orders/{u}?page={i}&sort=desc&api_version=2" for i, u in enumerate(uuids)],
        "s3_path": [f"s3://lake/raw/dt={day0 + timedelta(days=i % 365)}/part-{i:05d}-{u}.snappy.parquet" for i, u in enumerate(uuids)],
        "created_at": [(t0 + timedelta(seconds=rng.randrange(10**8))).isoformat() + "+00:00" for _ in range(n)],
        "epoch_ms": [str(1_700_000_000_000 + rng.randrange(10**10)) for _ in range(n)],
        "file": [f"/opt/airflow/dags/team_{i % 7}/etl_{i}.py" for i in range(n)],
        "status": [rng.choice(["ok", "failed", "pending", "skipped"]) for _ in range(n)],
        "city": [rng.choice(["Berlin", "New York", "São Paulo", "Zürich", "Tokyo"]) for _ in range(n)],
        "product": [rng.choice(["Widget Pro 3000", "ACME GmbH", "SKU-AB-1234", "v1.2.3", "Gadget (blue)"]) for _ in range(n)],
        "phone_like": [f"+49 30 {rng.randrange(10**7):07d}" for _ in range(n)],
        "amount": [f"{rng.uniform(0, 10_000):.2f}" for _ in range(n)],
        # Key-like names holding digests, ids, paths and dates: not keys.
        "cache_key": [hashlib.sha256(rbytes(8)).hexdigest() for _ in range(n)],
        "idempotency_key": uuids,
        "object_key": [f"raw/2025/{i:04d}/data.csv" for i in range(n)],
        "partition_key": [str(day0 + timedelta(days=i % 365)) for i in range(n)],
    }


def test_realistic_data_is_not_flagged_in_json_values() -> None:
    columns = realistic_columns()
    scanner = Scanner()
    rows = [{name: values[i] for name, values in columns.items()} for i in range(len(columns["uuid"]))]
    findings, complete = scanner.scan_structure(rows)
    assert complete and findings == []


def test_realistic_data_is_not_flagged_in_dataframes() -> None:
    frame = pd.DataFrame(realistic_columns())
    findings, _ = Scanner(limits=ScanLimits(sample_rows=len(frame))).scan_table(frame)  # every row
    assert findings == []
    masked, findings = Scanner().mask_table(frame)
    assert findings == [] and masked is frame


def test_a_lone_40_character_base64_word_is_taken_for_an_aws_secret() -> None:
    """Documented false positive: 30 random bytes in base64 have exactly the shape of an AWS
    secret access key. Inside longer base64, or as a hex digest, the shape does not match."""
    word = base64.b64encode(random.Random(1).randbytes(30)).decode()
    assert [f.detector for f in Scanner().scan_structure([word])[0]] == ["aws-secret-access-key"]
    assert Scanner().scan_structure([base64.b64encode(random.Random(1).randbytes(31)).decode()])[0] == []


# ------------------------------------------------------------------ budget and cost


def test_large_values_are_still_scanned_in_part_with_a_warning(tmp_path, caplog) -> None:
    scanner = Scanner(limits=ScanLimits(max_strings=100))
    reject = engine(tmp_path / "s", "reject", threshold=1 << 20, scanner=scanner)
    late = [f"row {i}" for i in range(200)] + [f"key {AWS_SECRET}"]
    with caplog.at_level(logging.WARNING, logger="xcomstash.security.sensitive"):
        reject.serialize(late, COORD)  # past the budget: not looked at
    assert "larger than the sensitive-data scan budget; scanned in part" in caplog.text
    with pytest.raises(SensitiveDataError):
        reject.serialize(late[-1:], COORD)


_IMPORTS = """
import sys
from pathlib import Path
from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.security.guard import Guard, SecurityConfig
from xcomstash.security.rules import Rules, ValueRule
from xcomstash.stores import open_store

config = StashConfig(store_url="file://" + sys.argv[1], threshold=1 << 20, read_ahead=False)
guard = Guard(SecurityConfig(rules=Rules(ValueRule(sensitive_data=sys.argv[2]))))
engine = Engine(config, open_store(config.store_url), guard=guard)
engine.serialize({"rows": 3, "note": "ok"}, XComCoordinate("d", "r", "t", -1, "return_value"))
print("detect_secrets" in sys.modules, "xcomstash.security.detectors" in sys.modules)
"""


def test_policy_off_never_loads_the_detectors(tmp_path) -> None:
    def loaded(policy: str) -> str:
        out = subprocess.run([sys.executable, "-c", _IMPORTS, str(tmp_path / policy), policy],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert loaded("off") == ["False", "False"]
    assert loaded("reject") == ["True", "True"]
