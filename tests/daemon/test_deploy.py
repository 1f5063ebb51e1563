"""deploy/: the systemd unit, the Prometheus rules and scrape config, the Grafana dashboard, checked with
the tools that will read them and against the /metrics of a real daemon.

``systemd-analyze`` (systemd) and ``promtool`` (Debian's ``prometheus`` package; .ci/run installs it)
are real programs: a test that needs one is skipped, saying so, where it is missing.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import DaemonProcess, wait_until

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "vertexflow-daemon.service"
RULES = DEPLOY / "prometheus" / "vertexflow.rules.yml"
SCRAPE = DEPLOY / "prometheus" / "scrape.yml"
GRAFANA = DEPLOY / "grafana" / "vertexflow.json"
#: where the unit expects things, replaced by this machine's in the tests that run its commands
UNIT_BINARY = "/opt/vertexflow/bin/vertexflow"
UNIT_CONFIG = "/etc/vertexflow/daemon.toml"
#: the instance label the tests give the scraped series, as Prometheus would
INSTANCE = "vf.test:8787"
METRIC = re.compile(r"\b((?:vertexflow|process)_[A-Za-z0-9_:]*)")


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian: apt-get install -y {package})")
    return path


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd)


# -- the systemd unit -----------------------------------------------------------------------------------

def _unit_for_this_machine(tmp_path: Path) -> Path:
    binary = shutil.which("vertexflow")
    if binary is None:
        pytest.skip("the vertexflow command is not on PATH (pip install -e .)")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(UNIT_BINARY, binary))
    return unit


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze", "systemd")
    unit = _unit_for_this_machine(tmp_path)  # verify checks that ExecStart's program exists
    result = _run(analyze, "verify", str(unit))
    said = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not said, result.stdout + result.stderr
    security = _run(analyze, "security", "--offline=yes", str(unit))
    if security.returncode == 0:  # systemd >= 250: the exposure score of the hardening options
        score = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
        assert score is not None and float(score.group(1)) <= 2.0, security.stdout[-500:]


def _unit_lines(key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in UNIT.read_text().splitlines() if line.startswith(key + "=")]


def test_unit_commands_start_reload_and_drain_the_daemon(tmp_path: Path) -> None:
    """ExecStart, both ExecReload lines and KillSignal, run as systemd would run them (without the
    sandbox), with the tokens from an EnvironmentFile named as the unit's comment says."""
    binary = shutil.which("vertexflow")
    kill = shutil.which("kill", path="/bin:/usr/bin")
    if binary is None or kill is None:
        pytest.skip("the vertexflow command or kill is not on PATH")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.txt").write_text("hello")
    config = tmp_path / "daemon.toml"
    env_file = tmp_path / "daemon.env"
    token, read = "t" * 40, "r" * 40
    env_file.write_text(f"VERTEXFLOW_DAEMON_TOKEN={token}\nVERTEXFLOW_DAEMON_READ_TOKEN={read}\n")
    job = '[[jobs]]\nname = "j"\nkind = "sync"\nsource = "a"\ndest = "b"\ninterval = "1h"\n'
    d = DaemonProcess(tmp_path, '[daemon]\nlisten = "127.0.0.1:{PORT}"\ntoken_env = "VERTEXFLOW_DAEMON_TOKEN"\n'
                      'read_token_env = "VERTEXFLOW_DAEMON_READ_TOKEN"\n' + job, token=token)
    assert _unit_lines("EnvironmentFile") == ["/etc/vertexflow/daemon.env"]
    environment = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    for assignment in _unit_lines("Environment"):
        name, value = assignment.split("=", 1)
        environment[name] = str(tmp_path / "journal.db") if name == "VERTEXFLOW_JOURNAL" else value
    env = {**os.environ, **environment}

    def command(line: str, pid: int | None = None) -> list[str]:
        line = line.replace(UNIT_BINARY, binary).replace(UNIT_CONFIG, str(config)).replace("/bin/kill", kill)
        return shlex.split(line.replace("$MAINPID", str(pid)))

    (start,) = _unit_lines("ExecStart")
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(command(start), stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: d.get("/readyz")["ready"], 20, what="the daemon started by ExecStart")
        wait_until(lambda: (tmp_path / "b" / "f.txt").exists(), 15, what="the first run")
        config.write_text(config.read_text() + job.replace('"j"', '"k"'))
        for line in _unit_lines("ExecReload"):
            assert subprocess.run(command(line, proc.pid), env=env, timeout=60).returncode == 0, line
        wait_until(lambda: "k" in {j["name"] for j in d.get("/api/jobs")["jobs"]}, 15, what="the reload")
        assert d.metrics()['vertexflow_daemon_config_reloads_total{result="applied"}'] == 1

        config.write_text(config.read_text() + "[[jobs]]\nname = 'bad'\n")  # systemctl reload fails on it
        check, _signal = _unit_lines("ExecReload")
        refused = subprocess.run(command(check, proc.pid), env=env, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and "jobs.bad.kind" in refused.stderr

        (kill_signal,) = _unit_lines("KillSignal")
        (stop_timeout,) = _unit_lines("TimeoutStopSec")
        proc.send_signal(getattr(signal, kill_signal))
        assert proc.wait(float(stop_timeout)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
    events = [json.loads(line) for line in (tmp_path / "daemon.log").read_text().splitlines() if line.strip()]
    assert {"daemon started", "config reloaded", "daemon stopped"} <= {e.get("event") for e in events}
    (prevent,) = _unit_lines("RestartPreventExitStatus")
    assert prevent == "2"  # the status of a bad config, token or certificate


# -- a real exposition ----------------------------------------------------------------------------------

SCRAPED = """
[daemon]
listen = "127.0.0.1:{PORT}"
# its own: a module's fixture starts before the per-test journal is set
journal = "journal.db"
backoff_initial = "100ms"
backoff_max = "200ms"

[[jobs]]
name = "ok"
kind = "sync"
source = "a"
dest = "b"
interval = "1h"

[[jobs]]
name = "broken"
kind = "sync"
source = "missing"
dest = "nowhere"
interval = "1h"
expected_interval = "1s"

[[jobs]]
name = "manual"
kind = "sync"
source = "a"
dest = "c"
"""


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """/metrics of a daemon with a job that succeeded, one failing and overdue, one on demand only, and
    a refused reload."""
    work = tmp_path_factory.mktemp("scraped")
    (work / "a").mkdir()
    (work / "a" / "f.bin").write_bytes(os.urandom(10_000))
    d = DaemonProcess(work, SCRAPED).start()
    try:
        wait_until(lambda: d.job("ok")["last_success"], 15, what="the ok job's run")
        wait_until(lambda: d.job("broken")["failures_in_a_row"] >= 3 and d.job("broken")["overdue"], 20,
                   what="the broken job failing three times and overdue")
        d.write_config(SCRAPED + "[[jobs]]\nname = 'bad'\n")
        d.signal(signal.SIGHUP)
        wait_until(lambda: d.metrics()["vertexflow_daemon_config_last_reload_successful"] == 0, 10,
                   what="the refused reload in /metrics")
        status, body, _ = d.request("GET", "/metrics")
        assert status == 200
        yield body.decode()
    finally:
        d.stop()


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, _, labels = series.partition("{")
        pairs = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels))
        out.append((name, pairs, float(value)))
    return out


def _exported(text: str) -> set[str]:
    """Every metric name the exposition offers: its samples' names and its families' (with the series a
    histogram's family implies), so a family with no sample yet (failures before the first) counts."""
    names = {name for name, _, _ in _samples(text)}
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.add(family)
        if kind == "histogram":
            names.update(family + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def test_exposition_passes_promtool_check_metrics(exposition: str) -> None:
    promtool = _tool("promtool", "prometheus")
    result = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
        result.stdout + result.stderr
    samples = {(name, tuple(sorted(labels.items()))): value for name, labels, value in _samples(exposition)}
    # the reloads are a counter by result (both series from the start) and a gauge for the last one
    assert samples[("vertexflow_daemon_config_reloads_total", (("result", "refused"),))] == 1
    assert samples[("vertexflow_daemon_config_reloads_total", (("result", "applied"),))] == 0
    assert "# TYPE vertexflow_daemon_config_reloads_total counter" in exposition


def test_rules_pass_promtool() -> None:
    promtool = _tool("promtool", "prometheus")
    result = _run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0 and "SUCCESS: 7 rules found" in result.stdout, result.stdout + result.stderr


def test_scrape_config_passes_promtool(tmp_path: Path) -> None:
    promtool = _tool("promtool", "prometheus")
    (tmp_path / "ca.pem").write_text("")
    (tmp_path / "token").write_text("r" * 40)
    text = SCRAPE.read_text()
    assert "honor_labels: true" in text  # the rules and the dashboard read the daemon's own job label
    text = text.replace("/etc/prometheus/vertexflow-ca.pem", str(tmp_path / "ca.pem"))
    text = text.replace("/etc/prometheus/vertexflow-read-token", str(tmp_path / "token"))
    (tmp_path / "scrape.yml").write_text(text)
    shutil.copy(RULES, tmp_path / RULES.name)
    result = _run(promtool, "check", "config", str(tmp_path / "scrape.yml"))
    assert result.returncode == 0 and "SUCCESS: 1 rule files found" in result.stdout, result.stdout + result.stderr


def test_rules_and_dashboard_use_only_exported_metrics(exposition: str) -> None:
    exported = _exported(exposition)
    rules = set(METRIC.findall(RULES.read_text()))
    queries = _grafana_queries()
    used = set(METRIC.findall("\n".join(queries)))
    assert {"vertexflow_job_overdue", "vertexflow_daemon_config_last_reload_successful",
            "vertexflow_event_loop_lag_max_seconds", "vertexflow_job_last_success_timestamp_seconds"} <= rules
    assert len(used) >= 15
    assert not rules - exported, f"rules use metrics the daemon does not export: {sorted(rules - exported)}"
    assert not used - exported, f"the dashboard queries metrics the daemon does not export: {sorted(used - exported)}"


def _grafana_queries() -> list[str]:
    dashboard = json.loads(GRAFANA.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["query"]["query"])
    return exprs


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Every panel's PromQL, with Grafana's variables filled in, parses (promtool reads it as a recording
    rule); the dashboard has a uid, a datasource variable and no panel without a query."""
    promtool = _tool("promtool", "prometheus")
    dashboard = json.loads(GRAFANA.read_text())
    assert dashboard["uid"] and dashboard["title"]
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in dashboard["templating"]["list"])
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(p.get("targets") for p in panels)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    filled = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$instance": ".*", "$job": ".*"}
    rules = []
    for i, expr in enumerate(_grafana_queries()):
        if m := re.fullmatch(r"label_values\((.+), (\w+)\)", expr):
            expr = m.group(1)
        for variable, value in filled.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"grafana:query_{i}", "expr": expr})
    (tmp_path / "queries.yml").write_text(json.dumps({"groups": [{"name": "grafana", "rules": rules}]}))
    result = _run(promtool, "check", "rules", str(tmp_path / "queries.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


# -- the alerts on that exposition ----------------------------------------------------------------------

def _series(exposition: str) -> list[dict[str, str]]:
    """The scrape as promtool input series, held for 25 hours: labelled as Prometheus would with
    ``honor_labels`` (an instance; the scrape job's name where the daemon gives no job), its Unix times
    moved so that the daemon started one minute into the test's clock."""
    samples = _samples(exposition)
    started = next(v for n, _, v in samples if n == "vertexflow_daemon_start_timestamp_seconds")
    out = []
    for name, labels, value in samples:
        labels = {"instance": INSTANCE, "job": "vertexflow", **labels}
        if name.endswith("_timestamp_seconds") or name.endswith("_created") or name.startswith("process_start"):
            value = value - started + 60 if value > 0 else 0.0
        selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        out.append({"series": f"{name}{{{selector}}}", "values": f"{value:f}+0x1500"})
    out.append({"series": f'up{{instance="{INSTANCE}",job="vertexflow"}}', "values": "1+0x1500"})
    return out


def _expected(alert: str, *label_sets: dict[str, str]) -> dict[str, Any]:
    """An alert_rule_test entry: the alert's labels and its annotations rendered for them from the rules
    file (annotations name labels only, so they render without a server)."""
    yaml = pytest.importorskip("yaml")
    rule = next(r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if r.get("alert") == alert)

    def render(template: str, labels: dict[str, str]) -> str:
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)
        assert "{{" not in text, f"{alert}: an annotation uses more than labels: {template}"
        return text

    return {"alertname": alert, "exp_alerts": [
        {"exp_labels": {**rule["labels"], **labels},
         "exp_annotations": {k: render(v, labels) for k, v in rule["annotations"].items()}}
        for labels in label_sets]}


def test_alerts_fire_on_a_real_exposition(exposition: str, tmp_path: Path) -> None:
    """promtool test rules, with the daemon's real series held steady: the failing and overdue job, the
    refused reload; a day later, no success; an idle (on demand) job never; synthetic series only for
    what a short run cannot produce (a dead daemon, failing objects, a lagging loop)."""
    promtool = _tool("promtool", "prometheus")
    broken = {"instance": INSTANCE, "job": "broken"}
    daemon = {"instance": INSTANCE, "job": "vertexflow"}
    real = {"interval": "1m", "input_series": _series(exposition), "alert_rule_test": [
        {"eval_time": "20m", "alertname": "VertexflowDaemonDown", "exp_alerts": []},
        _expected("VertexflowJobOverdue", broken) | {"eval_time": "20m"},
        _expected("VertexflowJobFailing", broken) | {"eval_time": "20m"},
        {"eval_time": "5m", "alertname": "VertexflowJobFailing", "exp_alerts": []},  # not before its 10 minutes
        _expected("VertexflowConfigReloadRefused", daemon) | {"eval_time": "20m"},
        {"eval_time": "20m", "alertname": "VertexflowJobNoRecentSuccess", "exp_alerts": []},
        {"eval_time": "20m", "alertname": "VertexflowObjectsFailing", "exp_alerts": []},
        _expected("VertexflowJobNoRecentSuccess", broken, {"instance": INSTANCE, "job": "ok"})
        | {"eval_time": "25h"},
    ]}
    synthetic = {"interval": "1m", "input_series": [
        {"series": f'up{{instance="{INSTANCE}",job="vertexflow"}}', "values": "0+0x20"},
        {"series": f'vertexflow_failures_total{{instance="{INSTANCE}",job="ok",reason="integrity"}}',
         "values": "0+1x120"},
        {"series": f'vertexflow_event_loop_lag_max_seconds{{instance="{INSTANCE}",job="vertexflow"}}',
         "values": "2+0x20"},
    ], "alert_rule_test": [
        _expected("VertexflowDaemonDown", daemon) | {"eval_time": "10m"},
        _expected("VertexflowEventLoopLag", daemon) | {"eval_time": "10m"},
        {"eval_time": "10m", "alertname": "VertexflowObjectsFailing", "exp_alerts": []},
        _expected("VertexflowObjectsFailing", {"instance": INSTANCE, "job": "ok", "reason": "integrity"})
        | {"eval_time": "110m"},
    ]}
    tests = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": [real, synthetic]}
    (tmp_path / "alerts_test.yml").write_text(json.dumps(tests, indent=1))
    result = _run(promtool, "test", "rules", str(tmp_path / "alerts_test.yml"))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:] + "\nthe exposition:\n" + exposition


def test_reloads_are_counted_and_a_removed_job_leaves_metrics(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.txt").write_text("hello")
    both = ('[daemon]\nlisten = "127.0.0.1:{PORT}"\n'
            '[[jobs]]\nname = "stays"\nkind = "sync"\nsource = "a"\ndest = "b"\n'
            '[[jobs]]\nname = "goes"\nkind = "sync"\nsource = "a"\ndest = "c"\ninterval = "1h"\n')
    d = DaemonProcess(tmp_path, both).start()
    try:
        wait_until(lambda: d.job("goes")["last_result"], 15, what="the removed job's run")
        assert any('job="goes"' in k for k in d.metrics() if k.startswith("vertexflow_job_duration_seconds"))
        d.write_config(both.split("[[jobs]]\nname = \"goes\"")[0])
        d.signal(signal.SIGHUP)
        wait_until(lambda: d.metrics()['vertexflow_daemon_config_reloads_total{result="applied"}'] == 1, 10,
                   what="the reload")
        wait_until(lambda: not [k for k in d.metrics() if 'job="goes"' in k], 10,
                   what="the removed job's series to go")
        d.write_config(both + "[[jobs]]\nname = 'bad'\n")
        d.signal(signal.SIGHUP)
        wait_until(lambda: d.metrics()['vertexflow_daemon_config_reloads_total{result="refused"}'] == 1, 10,
                   what="the refused reload")
        m = d.metrics()
        assert m["vertexflow_daemon_config_last_reload_successful"] == 0
        assert m['vertexflow_daemon_config_reloads_total{result="applied"}'] == 1
        d.write_config(both)
        d.signal(signal.SIGHUP)
        wait_until(lambda: d.metrics()["vertexflow_daemon_config_last_reload_successful"] == 1, 10,
                   what="the good reload after the refused one")
        assert d.metrics()['vertexflow_daemon_config_reloads_total{result="applied"}'] == 2
        assert d.get("/api/daemon")["reloads"] == 2
    finally:
        d.stop()

