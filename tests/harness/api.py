"""Airflow's public REST API (``/api/v2``), the way an operator or CI job drives Airflow:
trigger runs, wait for them, list task instances and their tries, read task logs, clear.

With ``SIMPLE_AUTH_MANAGER_ALL_ADMINS`` every request is an admin's and needs no token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable
from urllib.parse import quote

import httpx

TERMINAL_RUN_STATES = {"success", "failed"}
TERMINAL_TI_STATES = {"success", "failed", "skipped", "upstream_failed", "removed"}


class APIError(RuntimeError):
    pass


@dataclass
class TaskInstance:
    task_id: str
    map_index: int
    state: str | None
    try_number: int
    hostname: str | None = None
    pid: int | None = None

    @property
    def label(self) -> str:
        return f"{self.task_id}[{self.map_index}]" if self.map_index >= 0 else self.task_id


@dataclass
class Run:
    dag_id: str
    run_id: str
    state: str
    conf: dict[str, Any]
    seconds: float
    tasks: dict[tuple[str, int], TaskInstance] = field(default_factory=dict)

    def ti(self, task_id: str, map_index: int = -1) -> TaskInstance:
        return self.tasks[(task_id, map_index)]

    def not_successful(self) -> list[str]:
        return sorted(ti.label + f"={ti.state}" for ti in self.tasks.values() if ti.state != "success")


def q(part: str) -> str:
    return quote(part, safe="")


class AirflowAPI:
    def __init__(self, base_url: str, state_source: Callable[[str, str], str | None] | None = None) -> None:
        """``state_source(dag_id, run_id)``: a cheaper way to watch a run's state (a query of
        the metadata database) while :meth:`wait_run` waits; the run it returns is still read
        through the REST API. Without one, the REST API is polled once a second."""
        self.base_url = base_url
        self.client = httpx.Client(base_url=base_url + "/api/v2", timeout=30)
        self.state_source = state_source

    # --------------------------------------------------------------------- plumbing

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(5):
            try:
                response = self.client.request(method, path, **kwargs)
            except httpx.TransportError:
                if attempt == 4:
                    raise
                time.sleep(1)
                continue
            if response.status_code >= 500 and attempt < 4:
                time.sleep(1)
                continue
            if response.status_code >= 400:
                raise APIError(f"{method} {path}: {response.status_code} {response.text[:2000]}")
            return response.json() if response.content else None
        raise AssertionError("unreachable")

    def get(self, path: str, **params: Any) -> Any:
        return self._request("GET", path, params=params or None)

    def post(self, path: str, body: Any) -> Any:
        return self._request("POST", path, json=body)

    # --------------------------------------------------------------------- readiness

    def wait_healthy(self, timeout: float, processes: Iterable[Any] = ()) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            _check_alive(processes)
            try:
                r = httpx.get(self.base_url + "/api/v2/monitor/health", timeout=5)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.TransportError as exc:
                last = repr(exc)
            time.sleep(0.5)
        raise TimeoutError(f"API server not healthy after {timeout} s: {last}")

    def wait_dags(self, dag_ids: Iterable[str], timeout: float, processes: Iterable[Any] = ()) -> None:
        """Until the DAG processor has serialized every DAG (the API knows them)."""
        pending = set(dag_ids)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            _check_alive(processes)
            for dag_id in sorted(pending):
                try:
                    self.get(f"/dags/{q(dag_id)}/details")
                    pending.discard(dag_id)
                except APIError:
                    pass
            if pending:
                time.sleep(1)
        if pending:
            errors = self.get("/importErrors")
            raise TimeoutError(f"DAGs not parsed after {timeout} s: {sorted(pending)}; import errors: {errors}")

    # --------------------------------------------------------------------- runs

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.post(f"/dags/{q(dag_id)}/dagRuns", body)["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.get(f"/dags/{q(dag_id)}/dagRuns/{q(run_id)}")

    def wait_run(
        self, dag_id: str, run_id: str, timeout: float = 300, processes: Iterable[Any] = ()
    ) -> Run:
        started = time.monotonic()
        deadline = started + timeout
        processes = list(processes)
        while True:
            # Watched through the state source where there is one (a query costs the API
            # server nothing, so it can be asked often); confirmed through the REST API.
            watched = self.state_source(dag_id, run_id) if self.state_source else None
            if watched is None or watched in TERMINAL_RUN_STATES:
                info = self.run_state(dag_id, run_id)
                if info["state"] in TERMINAL_RUN_STATES:
                    break
            else:
                info = {"state": watched}
            if time.monotonic() > deadline:
                tis = self.task_instances(dag_id, run_id)
                states = sorted(f"{t.label}={t.state}" for t in tis.values())
                raise TimeoutError(f"run {dag_id}/{run_id} still {info['state']} after {timeout} s: {states}")
            _check_alive(processes)
            time.sleep(0.3 if self.state_source else 1)
        return Run(
            dag_id=dag_id,
            run_id=run_id,
            state=info["state"],
            conf=info.get("conf") or {},
            seconds=time.monotonic() - started,
            tasks=self.task_instances(dag_id, run_id),
        )

    def wait_runs(self, runs: Iterable[tuple[str, str]], timeout: float = 300,
                  processes: Iterable[Any] = ()) -> list[Run]:
        deadline = time.monotonic() + timeout
        return [
            self.wait_run(d, r, timeout=max(1.0, deadline - time.monotonic()), processes=processes)
            for d, r in runs
        ]

    # --------------------------------------------------------------------- task instances

    def task_instances(self, dag_id: str, run_id: str) -> dict[tuple[str, int], TaskInstance]:
        out: dict[tuple[str, int], TaskInstance] = {}
        offset = 0
        while True:
            page = self.get(
                f"/dags/{q(dag_id)}/dagRuns/{q(run_id)}/taskInstances", limit=100, offset=offset
            )
            for item in page["task_instances"]:
                ti = TaskInstance(
                    task_id=item["task_id"],
                    map_index=int(item["map_index"]),
                    state=item["state"],
                    try_number=int(item["try_number"]),
                    hostname=item.get("hostname"),
                    pid=item.get("pid"),
                )
                out[(ti.task_id, ti.map_index)] = ti
            offset += len(page["task_instances"])
            if not page["task_instances"] or offset >= page["total_entries"]:
                return out

    def wait_task_state(
        self, dag_id: str, run_id: str, task_id: str, states: set[str], map_index: int = -1,
        timeout: float = 120,
    ) -> TaskInstance:
        deadline = time.monotonic() + timeout
        while True:
            tis = self.task_instances(dag_id, run_id)
            ti = tis.get((task_id, map_index))
            if ti is not None and ti.state in states:
                return ti
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{dag_id}/{run_id}/{task_id}[{map_index}] not in {states} after {timeout} s: "
                    f"{ti.state if ti else 'no such task instance'}"
                )
            time.sleep(0.5)

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """One try's task log as text (structured log lines joined with their exceptions)."""
        body = self.get(
            f"/dags/{q(dag_id)}/dagRuns/{q(run_id)}/taskInstances/{q(task_id)}/logs/{try_number}",
            map_index=map_index, full_content="true",
        )
        return _log_text(body.get("content"))

    def set_run_state(self, dag_id: str, run_id: str, state: str) -> dict[str, Any]:
        """Mark a DAG run ``success`` or ``failed`` (its unfinished task instances with it)."""
        return self._request("PATCH", f"/dags/{q(dag_id)}/dagRuns/{q(run_id)}", json={"state": state})

    def extra_links(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, str | None]:
        """A task instance's operator extra links as the UI gets them: link name -> URL."""
        return self.get(
            f"/dags/{q(dag_id)}/dagRuns/{q(run_id)}/taskInstances/{q(task_id)}/links", map_index=map_index
        )["extra_links"]

    def delete_run(self, dag_id: str, run_id: str) -> None:
        """Delete a DAG run (its task instances and xcom rows go with it; no backend is told)."""
        self._request("DELETE", f"/dags/{q(dag_id)}/dagRuns/{q(run_id)}")

    def clear(self, dag_id: str, run_id: str, task_ids: list[str | list[Any]], *,
              include_downstream: bool = False) -> list[dict[str, Any]]:
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": task_ids,
            "only_failed": False,
            "reset_dag_runs": True,
            "include_downstream": include_downstream,
        }
        return self.post(f"/dags/{q(dag_id)}/clearTaskInstances", body)["task_instances"]


def _check_alive(processes: Iterable[Any]) -> None:
    for p in processes:
        if not p.alive():
            raise RuntimeError(f"Airflow process {p.name} died:\n{p.describe(80)}")


def _log_text(content: Any) -> str:
    """The log endpoint returns structured records; flatten them to readable text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    lines: list[str] = []
    for record in content:
        if isinstance(record, str):
            lines.append(record)
            continue
        event = record.get("event", "")
        extra = {k: v for k, v in record.items() if k not in ("event", "timestamp", "level", "logger")}
        lines.append(f"{record.get('level', '')} {event} {extra if extra else ''}".strip())
    return "\n".join(lines)
