"""Airflow's local settings hook for the deployment's scheduler and Celery workers: import,
once, the libraries every task of the test DAGs loads (numpy, pandas, pyarrow, boto3, the
Amazon provider's AWS and S3 hooks, the Task SDK's decorators that the DAG files use,
xcomstash's engine and S3 store), and fill the per-process caches every task would otherwise
fill again.

Both executors fork each task process from that process (LocalExecutor: from the scheduler;
Celery: from the worker's pool), so a task starts with them already imported instead of
importing them again: what an operator does with ``airflow_local_settings.py`` to cut task
start-up on a busy machine. Nothing here changes how a task or xcomstash behaves; only the
scheduler and the workers have this folder on their ``PYTHONPATH`` (tests/deployment/stack.py).

The cache: the Amazon provider's hook builds the user agent of every client it makes from
``inspect.stack()``, and ``inspect`` maps every loaded module to its file (``realpath`` of
each) the first time it looks a frame up, which in a task process with Airflow, pandas and
boto3 loaded is most of the CPU of making the S3 client. ``inspect.getmodule`` keeps that map
per process, so it is filled here before every fork (only modules loaded since the last fork
are new): each task process starts with it filled, as it starts with the modules imported.
And botocore parses its endpoint and S3 model files (JSON, about 0.25 s of CPU) once per
session, each session with a loader of its own, and the hook makes a session per client: here
every loader shares one cache of the parsed files (botocore's loader treats what it returns as
read-only, as one session's clients share it), filled once by making an S3 client before
any fork.
"""

from __future__ import annotations

import importlib
import inspect
import os

PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow",
    "boto3",
    "boto3.s3.inject",
    "botocore.client",
    "jinja2.ext",
    "xcomstash.engine",
    "xcomstash.stores.s3",
    "xcomstash.codecs.numpy",
    "xcomstash.codecs.pandas",
    "xcomstash.airflow.connections",
    "xcomstash.airflow.metrics",
    "airflow.providers.amazon.aws.hooks.base_aws",
    "airflow.providers.amazon.aws.hooks.s3",
    # What the DAG files import (``from airflow.sdk import dag, task``), parsed in every task.
    "airflow.sdk.definitions.decorators",
    "airflow.sdk.definitions.asset.metadata",
    # What supervises a task and runs it in its process (imported here, their module files are
    # mapped below before the first fork).
    "airflow.sdk.execution_time.supervisor",
    "airflow.sdk.execution_time.task_runner",
)

for _name in PRELOAD:
    try:
        importlib.import_module(_name)
    except ImportError:  # an optional library missing: the task imports what it needs itself
        pass

#: A code object from no module's file: looking its module up makes ``inspect`` map every
#: loaded module it has not mapped yet (and find none).
_NOWHERE = compile("", "<xcomstash-deploy-preload>", "exec")


def _map_module_files() -> None:
    try:
        inspect.getmodule(_NOWHERE)
    except Exception:  # only a cache: a task fills it itself if this fails
        pass


os.register_at_fork(before=_map_module_files)


def _share_botocore_data() -> None:
    import boto3
    import botocore.loaders
    import botocore.session

    create_loader = botocore.loaders.create_loader
    caches: dict = {}

    def create_loader_with_shared_cache(search_path_string=None):
        loader = create_loader(search_path_string)
        loader._cache = caches.setdefault(search_path_string, {})  # what @instance_cache fills
        return loader

    botocore.session.create_loader = create_loader_with_shared_cache
    # Parse the endpoint rules and the S3 model now (no request is sent).
    boto3.session.Session().client(
        "s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:9", aws_access_key_id="x",
        aws_secret_access_key="x",
    )


try:
    _share_botocore_data()
except Exception:  # only a cache: each session parses the files itself
    pass
