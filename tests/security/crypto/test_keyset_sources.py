"""Where workers get their keys: keyset files others may read are refused, keysets are loaded
per DAG pattern when first needed (a worker never reads another team's keyset it does not
use, and says so when it holds several), and a single-machine deployment gets a keyset
created on first use, the same one in every process."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from pathlib import Path

import pytest

from xcomstash.errors import ConfigError, KeyUnavailableError
from xcomstash.security.crypto.keyset import Keyset, load_keyring, provision_keyset_file, write_keyset_file


def keyset_file(path: Path, mode: int = 0o600) -> Path:
    write_keyset_file(path, Keyset.generate())
    os.chmod(path, mode)
    return path


def test_a_world_readable_keyset_file_is_refused_when_a_worker_loads_it(tmp_path):
    path = keyset_file(tmp_path / "keyset.json", 0o644)
    ring = load_keyring(f"file:{path}")
    with pytest.raises(ConfigError, match="readable by other users.*chmod 600"):
        ring.for_dag("any_dag")


def test_a_group_readable_keyset_file_is_loaded_with_a_warning(tmp_path, caplog):
    path = keyset_file(tmp_path / "keyset.json", 0o640)
    with caplog.at_level(logging.WARNING, logger="xcomstash"):
        load_keyring(f"file:{path}").for_dag("any_dag")
    assert "readable by its group" in caplog.text


def test_a_worker_loads_only_the_keysets_of_the_dags_it_runs(tmp_path, caplog):
    team_b = keyset_file(tmp_path / "team_b.json")
    # Team A's keyset is not there at all on team B's worker: nothing tries to read it.
    ring = load_keyring(f"team_a_*=file:{tmp_path / 'absent.json'}; team_b_*=file:{team_b}")
    with caplog.at_level(logging.WARNING, logger="xcomstash"):
        assert ring.for_dag("team_b_load").primary_id == Keyset.from_json(team_b.read_text()).primary_id
    assert "holds the keysets" not in caplog.text
    with pytest.raises(ConfigError, match="absent.json"):
        ring.for_dag("team_a_etl")  # only when a team A DAG runs here
    with pytest.raises(KeyUnavailableError, match="team_c"):
        ring.for_dag("team_c_x")


def test_a_worker_holding_several_teams_keysets_warns_once(tmp_path, caplog):
    a, b = keyset_file(tmp_path / "a.json"), keyset_file(tmp_path / "b.json")
    ring = load_keyring(f"team_a_*=file:{a}; team_b_*=file:{b}")
    with caplog.at_level(logging.WARNING, logger="xcomstash"):
        ring.for_dag("team_a_1")
        ring.for_dag("team_b_1")
        ring.for_dag("team_b_2")
    assert caplog.text.count("holds the keysets of DAG patterns team_a_*, team_b_*") == 1


def test_a_bad_keyset_source_fails_at_start_up_not_at_first_use():
    with pytest.raises(ConfigError, match="must be one of"):
        load_keyring("team_a_*=vault:x")


def _provision(path: str, out: multiprocessing.Queue) -> None:
    out.put(provision_keyset_file(path).primary_id)


def test_the_keyset_of_a_local_store_is_created_once_private_and_shared_by_concurrent_processes(tmp_path):
    path = tmp_path / "home" / "xcomstash-keyset.json"
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_provision, args=(str(path), out)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    ids = {out.get(timeout=5) for _ in procs}
    assert len(ids) == 1  # every process signs with the same key
    assert (path.stat().st_mode & 0o777) == 0o600
    assert json.loads(path.read_text())["primary"] in ids
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".keyset-")]  # no temporaries left
