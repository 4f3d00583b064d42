"""A real Airflow installation for the lifecycle tests, on SQLite or PostgreSQL.

Extends the harness of tests/airflow (which reads SQLite with ``sqlite3``) so that the same
helpers read a PostgreSQL metadata database with psycopg2, and adds what these tests need:
running ``xcomstash`` subcommands with the installation's configuration, and the exact set of
store keys the xcom rows keep alive.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from tests.airflow.harness import AIRFLOW_BIN, DEFAULT_TIMEOUT_S, AirflowEnv, CommandResult, clean_environ

HERE = Path(__file__).resolve().parent
DAGS = HERE / "dags"
CLI = "import sys\nfrom xcomstash.cli import main\nsys.exit(main(sys.argv[1:]))"


@dataclass
class PostgresTemplate:
    server: Any
    template: str  # name of the migrated database new ones are cloned from

    def clone(self) -> str:
        name = f"af_{uuid.uuid4().hex[:12]}"
        subprocess.run(
            [str(self.server.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.server.port), "-U", "airflow",
             "-d", "postgres", "-qc", f'create database "{name}" template "{self.template}"'],
            check=True, capture_output=True,
        )
        return f"postgresql+psycopg2://airflow@127.0.0.1:{self.server.port}/{name}"


def migrate_postgres_template(server: Any, workdir: Path) -> PostgresTemplate:
    """``airflow db migrate`` once into a template database; tests clone it (``TEMPLATE``)."""
    url = server.create_database("af_template")
    env = clean_environ()
    env.update(
        AIRFLOW_HOME=str(workdir),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=url,
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(workdir / "dags"),
    )
    (workdir / "dags").mkdir(exist_ok=True)
    proc = subprocess.run([str(AIRFLOW_BIN), "db", "migrate"], env=env, capture_output=True, text=True,
                          timeout=DEFAULT_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db migrate on PostgreSQL failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return PostgresTemplate(server, "af_template")


class MaintenanceEnv(AirflowEnv):
    def __init__(self, root: Path, sqlite_template: Path, postgres: PostgresTemplate | None = None) -> None:
        super().__init__(root, sqlite_template)
        shutil.copy(DAGS / "xcs_gc.py", self.dags_folder / "xcs_gc.py")
        self.database = "sqlite"
        if postgres is not None:
            self.database = "postgres"
            self.pg_url = postgres.clone()
            self.config["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = self.pg_url

    # The harness reads SQLite; on PostgreSQL the same SQL runs through psycopg2.
    def query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        if self.database == "sqlite":
            return super().query(sql, params)
        import psycopg2
        import psycopg2.extras

        dsn = self.pg_url.replace("postgresql+psycopg2://", "postgresql://")
        with psycopg2.connect(dsn) as conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(sql.replace("?", "%s"), tuple(params))
            return list(cur.fetchall()) if cur.description else []

    def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run a statement on the metadata database (test set-up only: e.g. an XCom deleted
        in the UI is a plain row delete)."""
        if self.database == "sqlite":
            with self.connect() as conn:
                return conn.execute(sql, tuple(params)).rowcount
        import psycopg2

        dsn = self.pg_url.replace("postgresql+psycopg2://", "postgresql://")
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), tuple(params))
            return cur.rowcount

    def xcomstash(self, *args: str, env: dict[str, str | None] | None = None, timeout: float = 300) -> CommandResult:
        return self._run([sys.executable, "-c", CLI, *args], env, timeout)

    def xcomstash_json(self, *args: str, expect: int = 0, **kwargs: Any) -> dict[str, Any]:
        result = self.xcomstash(*args, "--json", **kwargs)
        assert result.returncode == expect, result.describe()
        return json.loads(result.stdout)

    def store_files(self) -> dict[str, int]:
        """Every file in the local store, links included (key -> size)."""
        return self._store_files("")

    def store_keys(self) -> set[str]:
        """Every object and link in the local store, temporary upload files excluded."""
        return {k for k in self.store_files() if not k.rsplit("/", 1)[-1].startswith(".tmp-")}

    def referenced_keys(self) -> set[str]:
        """The keys the xcom rows keep alive: each referenced object, and for content-addressed
        blobs the link of each row that references one."""
        from xcomstash.coordinate import XComCoordinate

        prefix = f"file://{self.store.resolve()}/"
        keys: set[str] = set()
        for row in self.xcom_rows():
            if not row.is_reference:
                continue
            uri = row.value["uri"]
            assert uri.startswith(prefix), uri
            key = uri[len(prefix):]
            keys.add(key)
            if "/.blobs/" in key:
                coordinate = XComCoordinate(row.dag_id, row.run_id, row.task_id, row.map_index, row.key)
                keys.add(coordinate.link_key(row.value["digest"]))
        return keys
