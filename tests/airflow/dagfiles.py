"""The DAG files of this tier (tests/airflow/dags) and their shared expected values."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

DAGS_SOURCE = Path(__file__).resolve().parent / "dags"
#: Shared by every test DAG (expected values and digests); always copied next to the DAGs.
SHARED_DAG_MODULES = ("xcs_values.py",)


def dag_values_module() -> Any:
    """``xcs_values`` (the DAGs' expected values), imported here without touching sys.path."""
    name = "xcs_values_for_tests"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DAGS_SOURCE / "xcs_values.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
