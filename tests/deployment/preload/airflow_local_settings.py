"""Airflow's local settings hook for the deployment's scheduler and Celery workers: import,
once, the libraries every task of the test DAGs loads (numpy, pandas, pyarrow, boto3, the
Amazon provider's AWS hook, xcomstash's engine and S3 store).

Both executors fork each task process from that process (LocalExecutor: from the scheduler;
Celery: from the worker's pool), so a task starts with them already imported instead of
importing them again: what an operator does with ``airflow_local_settings.py`` to cut task
start-up on a busy machine. Nothing here changes how a task or xcomstash behaves; only the
scheduler and the workers have this folder on their ``PYTHONPATH`` (tests/deployment/stack.py).
"""

from __future__ import annotations

import importlib

PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow",
    "boto3",
    "botocore.client",
    "xcomstash.engine",
    "xcomstash.stores.s3",
    "xcomstash.codecs.numpy",
    "xcomstash.codecs.pandas",
    "airflow.providers.amazon.aws.hooks.base_aws",
)

for _name in PRELOAD:
    try:
        importlib.import_module(_name)
    except ImportError:  # an optional library missing: the task imports what it needs itself
        pass
