"""A small, realistic pipeline that moves a large DataFrame, a NumPy array, small JSON and a
mapped fan-out/fan-in between tasks through XCom (and so through xcomstash)."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pandas as pd
from airflow.sdk import dag, get_current_context, task

#: Rows of the extracted DataFrame (the tests run the demo smaller, on several Airflow releases).
ROWS = int(os.environ.get("XCOMSTASH_DEMO_ROWS", "500000"))


def frame_digest(df: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(df, index=True).values.tobytes()).hexdigest()


@dag(schedule=None, catchup=False, tags=["xcomstash", "demo"])
def xcomstash_demo():
    @task
    def extract() -> pd.DataFrame:
        rng = np.random.default_rng(42)
        df = pd.DataFrame({f"f{i}": rng.standard_normal(ROWS) for i in range(8)})
        df["region"] = pd.Categorical(rng.choice(["emea", "amer", "apac"], ROWS))
        df.index = pd.date_range("2026-01-01", periods=ROWS, freq="min", tz="UTC", name="ts")
        get_current_context()["ti"].xcom_push(key="extract_digest", value=frame_digest(df))
        return df

    @task
    def features(df: pd.DataFrame) -> np.ndarray:
        expected = get_current_context()["ti"].xcom_pull(task_ids="extract", key="extract_digest")
        assert frame_digest(df) == expected, "DataFrame changed in transit"
        return np.asfortranarray(df[[f"f{i}" for i in range(8)]].to_numpy())

    @task
    def stats(df: pd.DataFrame) -> dict:
        return {"rows": len(df), "mean_f0": float(df["f0"].mean()), "regions": sorted(df["region"].unique())}

    @task
    def regions(stats: dict) -> list[str]:
        return stats["regions"]

    @task
    def per_region(region: str) -> pd.DataFrame:
        rng = np.random.default_rng(abs(hash(region)) % 2**32)
        return pd.DataFrame({"region": region, "value": rng.standard_normal(100_000)})

    @task
    def combine(parts: list[pd.DataFrame], x: np.ndarray, stats: dict) -> dict:
        total = sum(len(p) for p in parts)
        assert x.shape == (stats["rows"], 8) and x.flags.f_contiguous
        return {"regions": len(parts), "rows": total, "array_sum": float(x.sum())}

    df = extract()
    s = stats(df)
    parts = per_region.expand(region=regions(s))
    combine(parts, features(df), s)


xcomstash_demo()
