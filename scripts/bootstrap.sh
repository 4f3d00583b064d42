#!/usr/bin/env bash
# Create .venv at the repository root from uv.lock (uv comes from PyPI; it resolves and
# installs Airflow in seconds where plain pip backtracks for minutes on the fsspec family).
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.8
PY=${PYTHON:-python3}
if ! "$PY" -m uv --version 2>/dev/null | grep -q "uv $UV_VERSION"; then
  "$PY" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
# --compile-bytecode: compiled once here, in parallel, rather than by every Airflow process
# the demo and the tests start (each would otherwise compile Airflow, pandas and pyarrow).
"$PY" -m uv sync --frozen --compile-bytecode --quiet --python "$("$PY" -c 'import sys; print(sys.executable)')"
