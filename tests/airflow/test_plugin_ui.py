"""The XCom tab and the storage overview in a real Airflow UI: one API server with the
plugin and the simple auth manager (alice: admin; bob: a viewer of another team, who may
not read this DAG), one ``airflow dags test`` run, the maintenance commands, then the
plugin's API and headless Chromium (apt chromium + chromium-driver, driven by selenium).

Screenshots are saved in the test's directory (``<tmp>/ui/screenshots``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.harness.airflow import AIRFLOW_BIN, AirflowEnv
from xcomstash.maintenance.records import record_run
from xcomstash.maintenance.stats import collect
from xcomstash.stores import LocalStore
from tests.harness.servers import free_port

pytestmark = pytest.mark.airflow

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
DAG = "xcs_ui"
REPO = Path(__file__).resolve().parents[2]
README_SHOT = REPO / "docs" / "img" / "xcom-tab.png"


@dataclass
class UI:
    env: AirflowEnv
    url: str
    run_id: str
    passwords: dict[str, str]
    shots: Path

    def token(self, user: str) -> str:
        r = httpx.post(f"{self.url}/auth/token", json={"username": user, "password": self.passwords[user]}, timeout=30)
        assert r.status_code == 201, r.text
        return r.json()["access_token"]

    def get(self, path: str, user: str, **params: Any) -> httpx.Response:
        return httpx.get(
            f"{self.url}{path}", params=params, headers={"Authorization": f"Bearer {self.token(user)}"}, timeout=60
        )

    def ti_params(self, task_id: str = "produce", map_index: str = "{MAP_INDEX}") -> dict[str, str]:
        return {"dag_id": DAG, "run_id": self.run_id, "task_id": task_id, "map_index": map_index}


def _wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert server.poll() is None, log.read_text(errors="replace")[-4000:]
        assert time.monotonic() < deadline, "api-server did not answer"
        time.sleep(0.3)


def _stop(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def ui(make_airflow_env) -> Iterator[UI]:
    env = make_airflow_env("ui", dags=["xcs_ui.py"])
    # Audit events go to the store too: the overview shows the denied pull.
    env.config["AIRFLOW__XCOMSTASH__AUDIT"] = "log,store"
    env.config["AIRFLOW__XCOMSTASH__COMPRESSION"] = "zstd"  # the tab shows a compression ratio
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # bob is in team_b; this DAG's bundle will belong to team_a (the teams must exist when
    # the API server starts; which bundle is whose is read per request).
    env.execute("INSERT INTO team (name) VALUES ('team_a'), ('team_b')")
    api_env = env.environ({
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": "xcomstash-ui-test-secret",
        "AIRFLOW__CORE__MULTI_TEAM": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "alice:admin,bob:viewer:team_b",
    })
    log_path = env.root / "api-server.log"
    log = open(log_path, "wb")
    # Started first: it boots while the DAG runs.
    server = subprocess.Popen(
        [str(AIRFLOW_BIN), "api-server"], env=api_env, cwd=env.root, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # The first stats snapshot: the empty xcom table (growth is measured from it), as
        # ``xcomstash stats`` records it (run in-process: no Airflow needed for no rows).
        record_run(LocalStore(env.store), "stats", collect([]).to_json(top=50), summary="stats: 0 XComs")
        # The run, then stats, verify and reconcile in one process.
        run = env.dags_test(DAG)
        run.assert_success()
        env.execute(
            "INSERT INTO dag_bundle_team (dag_bundle_name, team_name) SELECT bundle_name, 'team_a' FROM dag WHERE dag_id = ?",
            (DAG,),
        )
        env.python(
            "from xcomstash.cli import main\n"
            "for args in (['stats'], ['verify'], ['reconcile', '--grace', '1h']):\n"
            "    assert main([*args, '--quiet']) == 0, args\n"
        ).assert_ok()
        _wait_healthy(url, server, log_path)
        passwords = json.loads((env.home / "simple_auth_manager_passwords.json.generated").read_text())
        shots = env.root / "screenshots"
        shots.mkdir()
        yield UI(env, url, run.run_id, passwords, shots)
    finally:
        _stop(server)
        log.close()


# ------------------------------------------------------------------------------- the API


def test_the_tab_api_previews_every_xcom_of_the_task_instance_for_a_reader(ui: UI) -> None:
    r = ui.get("/xcomstash/api/task-instance", "alice", **ui.ti_params())
    assert r.status_code == 200, r.text
    doc = r.json()
    xcoms = {x["key"]: x for x in doc["xcoms"]}
    assert set(xcoms) == {"array", "blob", "return_value", "settings"}

    frame = xcoms["return_value"]
    assert frame["stored"]["location"] == "store" and frame["stored"]["codec"] == "pandas.arrow-ipc"
    assert frame["stored"]["uri"].startswith(f"file://{ui.env.store}/")
    assert frame["stored"]["body_bytes"] < frame["stored"]["raw_bytes"] and frame["stored"]["ratio"] > 1
    table = frame["preview"]
    assert [c["name"] for c in table["columns"]] == ["id", "city", "amount", "when"]
    assert table["num_rows"] == 200_000 and len(table["rows"]) == 20
    assert table["rows"][0] == [0, "Lisbon", 0.0, "2026-01-01T00:00:00+00:00"]
    assert table["rows"][3][2] is None  # the NaN of row 3 (pandas stores it as a null)
    # A partial read: not every frame of the object was fetched.
    assert frame["read"]["frames_fetched"] < frame["read"]["frames_total"]
    assert frame["verification"]["status"] == "no problem reported"

    array = xcoms["array"]["preview"]
    assert array["shape"] == [400, 500] and array["dtype"] == "float64" and array["order"] == "C"
    assert array["summary"] == {"nan": 3, "min": 3.0, "max": 199_999.0, "mean": array["summary"]["mean"]}

    settings = xcoms["settings"]["preview"]["text"]
    assert '"owner": "data-team"' in settings and "hunter2" not in settings and '"password": "***"' in settings

    blob = xcoms["blob"]["preview"]
    assert blob["length"] == 8 + 256 * 400 and blob["hex"].startswith("00000000  58 43 53 42 4c 4f 42 00")


def test_the_tab_lists_mapped_instances_and_says_why_a_value_is_not_previewed(ui: UI) -> None:
    fan = ui.get("/xcomstash/api/task-instance", "alice", **ui.ti_params("fan")).json()
    assert [(x["map_index"], x["preview"]["text"]) for x in fan["xcoms"]] == [
        (0, '{\n  "x": 1\n}'), (1, '{\n  "x": 2\n}')
    ]
    assert all(x["stored"]["location"] == "inline" for x in fan["xcoms"])
    one = ui.get("/xcomstash/api/task-instance", "alice", **ui.ti_params("fan", "1")).json()
    assert [x["map_index"] for x in one["xcoms"]] == [1]
    (secret,) = ui.get("/xcomstash/api/task-instance", "alice", **ui.ti_params("secret")).json()["xcoms"]
    assert "restricted" in secret["error"] and "preview" not in secret


def test_a_user_who_may_not_read_the_dags_xcoms_gets_403_and_no_bytes(ui: UI) -> None:
    for path in ("/xcomstash/api/task-instance", "/xcomstash/task-instance"):
        r = ui.get(path, "bob", **ui.ti_params())
        assert r.status_code == 403, (path, r.status_code, r.text[:500])
        assert "Lisbon" not in r.text and "XCSBLOB" not in r.text and "58 43 53" not in r.text
    # Without any credential: 401.
    assert httpx.get(f"{ui.url}/xcomstash/api/task-instance", params=ui.ti_params(), timeout=30).status_code == 401
    # The overview shows bob nothing of this DAG (nor the run summaries, which count over it).
    doc = ui.get("/xcomstash/api/overview", "bob").json()
    assert DAG not in doc["stats"]["by_dag"] and doc["runs"] is None and doc["hidden_dags"] == 1
    assert all(e["xcom"].get("dag_id") != DAG for e in doc["events"])


def test_previews_are_audited_as_the_airflow_user(ui: UI) -> None:
    ui.get("/xcomstash/api/task-instance", "alice", **ui.ti_params()).raise_for_status()
    result = ui.env.xcomstash("audit", "--op", "preview", "--dag", DAG, "--json")
    result.assert_ok()
    actors = [json.loads(line)["actor"] for line in result.stdout.splitlines() if line.startswith("{")]
    assert {"user": "alice", "via": "airflow ui"} in actors
    assert all(a.get("user") != "bob" for a in actors)


def test_the_overview_api_reads_the_maintenance_records(ui: UI) -> None:
    doc = ui.get("/xcomstash/api/overview", "alice").json()
    dag = doc["stats"]["by_dag"][DAG]
    # Growth: the first stats run saw an empty store.
    assert dag["objects"] == dag["objects_change"] > 0 and dag["bytes"] == dag["bytes_change"] > 100_000
    assert doc["stats"]["largest"][0]["xcom"]["dag_id"] == DAG
    assert doc["runs"]["verify"]["exit_code"] == 0 and doc["runs"]["reconcile"]["exit_code"] == 0
    assert doc["runs"]["retention"] is None
    denied = {(e["op"], e["xcom"]["task_id"], e["why"]) for e in doc["events"] if e["outcome"] == "denied"}
    # The task's denied pull, and the tab's denied preview (alice is no reader either).
    assert ("pull", "secret", "pull denied (AccessDeniedError)") in denied
    assert ("preview", "secret", "preview denied (AccessDeniedError)") in denied
    assert {"user": "alice", "via": "airflow ui"} in [e["actor"] for e in doc["events"] if e["op"] == "preview"]
    # `xcomstash check` as the API server sees it: its store probed, its keyset found.
    checks = {c["name"]: c for c in doc["checks"]}
    assert any(name.startswith("store ") and c["status"] == "ok" for name, c in checks.items()), checks
    assert checks["config"]["status"] == "ok", checks


# ---------------------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def browser(ui: UI) -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("headless Chromium is missing: scripts/test-deps.sh installs chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = ui.env.root / "chromium-profile"
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1050",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _login(driver: Any, ui: UI, user: str) -> None:
    """Through the simple auth manager's login form, as a person would."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver.delete_all_cookies()
    driver.get(f"{ui.url}/auth/login")
    wait = WebDriverWait(driver, 30)
    name = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[name='username']")))
    name.send_keys(user)
    driver.find_element(By.CSS_SELECTOR, "input[name='password']").send_keys(ui.passwords[user])
    driver.find_element(By.CSS_SELECTOR, "button[type='submit']").click()
    wait.until(lambda d: d.get_cookie("_token") is not None)


def _plugin_frame(driver: Any, timeout: float = 30) -> None:
    """Switch into the plugin's iframe once the UI has rendered it and it has loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        EC.frame_to_be_available_and_switch_to_it((By.CSS_SELECTOR, "iframe[src*='/xcomstash/']"))
    )
    WebDriverWait(driver, timeout).until(lambda d: d.find_elements(By.CSS_SELECTOR, "h1"))


def test_the_tab_in_the_airflow_ui_shows_the_table_array_json_and_bytes(ui: UI, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    _login(browser, ui, "alice")
    browser.get(f"{ui.url}/dags/{DAG}/runs/{ui.run_id}/tasks/produce/plugin/xcomstash")
    _plugin_frame(browser)
    boxes = {b.get_attribute("data-key"): b for b in browser.find_elements(By.CSS_SELECTOR, "[data-testid='xcom']")}
    assert set(boxes) == {"array", "blob", "return_value", "settings"}
    table = boxes["return_value"].find_element(By.CSS_SELECTOR, "[data-testid='preview-table']")
    headers = [th.get_attribute("data-column") for th in table.find_elements(By.CSS_SELECTOR, "th")]
    assert headers == ["id", "city", "amount", "when"]
    rows = [[td.text for td in tr.find_elements(By.CSS_SELECTOR, "td")] for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert len(rows) == 20 and rows[1] == ["1", "Osaka", "0.5", "2026-01-01T00:00:01+00:00"]
    assert boxes["return_value"].find_element(By.CSS_SELECTOR, "[data-testid='num-rows']").text == "200,000 rows"
    size = boxes["return_value"].find_element(By.CSS_SELECTOR, "[data-fact='stored bytes']").text
    assert "MiB" in size or "KiB" in size
    assert "***" in boxes["settings"].find_element(By.CSS_SELECTOR, "[data-testid='preview-json']").text
    assert "hunter2" not in browser.page_source
    array = boxes["array"].find_element(By.CSS_SELECTOR, "[data-testid='preview-array']").text
    assert "400 x 500" in array and "float64" in array
    assert "58 43 53 42" in boxes["blob"].find_element(By.CSS_SELECTOR, "[data-testid='preview-hex']").text
    browser.switch_to.default_content()
    browser.save_screenshot(str(ui.shots / "xcom-tab.png"))
    if os.environ.get("XCS_UPDATE_README_SCREENSHOT"):
        README_SHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ui.shots / "xcom-tab.png", README_SHOT)


def test_the_overview_page_in_the_airflow_ui(ui: UI, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    _login(browser, ui, "alice")
    browser.get(f"{ui.url}/plugin/xcomstash-overview")
    _plugin_frame(browser)
    dag_row = browser.find_element(By.CSS_SELECTOR, f"[data-testid='by-dag'] tr[data-dag='{DAG}']")
    cells = [td.text for td in dag_row.find_elements(By.CSS_SELECTOR, "td")]
    assert cells[0] == DAG and cells[3].startswith("+") and "MiB" in cells[2]
    runs = {tr.get_attribute("data-command"): tr.text for tr in browser.find_elements(By.CSS_SELECTOR, "[data-testid='runs'] tr[data-command]")}
    assert "verify" in runs["verify"] and "0 corrupt" in runs["verify"] and "never run" in runs["retention"]
    assert "pull denied" in browser.find_element(By.CSS_SELECTOR, "[data-testid='events']").text
    assert "store " in browser.find_element(By.CSS_SELECTOR, "[data-testid='checks']").text
    browser.switch_to.default_content()
    browser.save_screenshot(str(ui.shots / "overview.png"))


def test_the_tab_in_the_browser_is_403_for_a_user_without_access(ui: UI, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    _login(browser, ui, "bob")
    params = ui.ti_params()
    browser.get(
        f"{ui.url}/xcomstash/task-instance?dag_id={DAG}&run_id={params['run_id']}&task_id=produce&map_index=%7BMAP_INDEX%7D"
    )
    error = browser.find_element(By.CSS_SELECTOR, "[data-testid='error']")
    assert error.get_attribute("data-status") == "403" and "may not read the XComs" in error.text
    assert "Lisbon" not in browser.page_source
    browser.save_screenshot(str(ui.shots / "forbidden.png"))


def test_a_task_process_loads_the_plugin_without_building_the_app(ui: UI) -> None:
    """Every task process loads the plugins (for their macros): the FastAPI app, and with it
    Airflow's API security, is built only where the API server reads ``fastapi_apps``."""
    result = ui.env.python(
        "import sys\n"
        "from airflow.sdk.plugins_manager import _get_plugins\n"
        "plugins, errors = _get_plugins()\n"
        "assert 'xcomstash' in [p.name for p in plugins] and not errors, (plugins, errors)\n"
        "assert 'xcomstash.airflow.ui' not in sys.modules and 'fastapi' not in sys.modules\n"
        "print('lazy')\n"
    )
    assert result.returncode == 0 and "lazy" in result.stdout, result.describe()
