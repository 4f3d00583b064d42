"""A local store on a full filesystem (a real size-limited tmpfs): the push fails with
StoreFullError naming the store, the XCom and what to do, is audited as a failed push, leaves no
partial file behind, and the store takes the next value that fits."""

from __future__ import annotations

import os
import subprocess
import traceback
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from tests.harness.events import Collector

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.errors import StoreFullError
from xcomstash.observe.events import FAILED

SIZE_MB = 8
COORD = XComCoordinate("etl", "manual__1", "big_array", -1, "return_value")



@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs (needs the right to mount, as root in this project's test machines)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def files_under(root: Path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names)


def test_a_push_larger_than_the_free_space_is_store_full_and_leaves_nothing(small_disk: Path) -> None:
    seen = Collector()
    engine = Engine(StashConfig(store_url=f"file://{small_disk}", threshold=0, read_ahead=False), subscribers=[seen])
    too_big = np.random.default_rng(1).random(3 * SIZE_MB * 1024 * 1024 // 8)  # 24 MiB, incompressible
    with pytest.raises(StoreFullError) as raised:
        engine.serialize(too_big, COORD)
    message = str(raised.value)
    assert str(small_disk) in message and "full" in message and "reconcile" in message
    assert "etl" in message  # the object's URI names the DAG and run
    # The XCom, whole, in the traceback an Airflow task log shows.
    assert "etl" in "".join(traceback.format_exception(raised.value)) and "big_array" in "".join(
        traceback.format_exception(raised.value)
    )
    # Audited as a failed push of that XCom.
    (event,) = [e for e in seen.events if e.op == "push"]
    assert event.outcome == FAILED and isinstance(event.error, StoreFullError) and event.xcom == COORD
    # The partial file is gone, so the disk is not left full.
    assert files_under(small_disk) == []
    assert os.statvfs(small_disk).f_bfree * os.statvfs(small_disk).f_frsize > (SIZE_MB - 1) * 1024 * 1024
    # A value that fits goes through.
    fits = np.arange(100_000, dtype=np.float64)
    stored = engine.serialize(fits, COORD)
    assert np.array_equal(engine.deserialize(stored, COORD), fits)
