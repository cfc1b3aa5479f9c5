"""A real Airflow deployment on loopback: Redis, api-server, dag-processor, scheduler and two Celery workers.

The two workers mirror the cluster of docker-compose.yml on one machine: ``cpu@<host>`` serves the ``default``
queue, ``gpu@<host>`` the ``gpu`` queue (the infer shards). The executor is CeleryExecutor with a Redis broker and
the Airflow metadata database as result backend. Every service is a child process in its own process group with
its own log file; :meth:`AirflowStack.stop` ends them and everything they started.

Used by the integration tests (``tests/integration/conftest.py``). Plain module: it runs the ``airflow`` CLI in
subprocesses and never imports Airflow itself.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKER_NAME_ENV = "LM_INSIGHTS_WORKER_NAME"
QUEUES = {"cpu": "default", "gpu": "gpu"}  # Celery node name prefix -> queue it serves


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the stack's workers: the Celery node name, so a task instance's
    ``hostname`` tells which worker ran it (both workers share one machine)."""
    name = os.environ.get(WORKER_NAME_ENV)
    return f"{name}@{socket.getfqdn()}" if name else socket.getfqdn()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServiceError(RuntimeError):
    """A service did not start or stopped early; the message holds the tails of every log."""


@dataclass
class Service:
    """One child process and its log file."""

    name: str
    command: list[str]
    log_path: Path
    process: subprocess.Popen | None = None

    def start(self, env: dict[str, str], cwd: Path) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the process group and every descendant, SIGKILL whatever is left after ``grace_s``."""
        if self.process is None:
            return  # even when the service itself has exited, what it started may still run in its group
        members = _descendants(self.process.pid)
        _signal_group(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        for pid in [self.process.pid, *members]:  # task processes may have left the group (setsid)
            _kill(pid, signal.SIGKILL)
        _signal_group(self.process.pid, signal.SIGKILL)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _descendants(pid: int) -> list[int]:
    try:
        import psutil
    except ImportError:  # psutil comes with Airflow; without it the process group is all we stop
        return []
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # start_new_session made the service its group leader: pgid == pid
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class AirflowStack:
    """Airflow on CeleryExecutor against the metadata database of ``base_env`` (the embedded PostgreSQL).

    :param base_env: environment with AIRFLOW_HOME, AIRFLOW__DATABASE__SQL_ALCHEMY_CONN and the connections
        (``local_env.airflow_environment``); the database must be migrated and the ``lm_gpu`` pool created.
    :param run_dir: where the service logs and Redis's working directory go.
    :param worker_concurrency: task slots per Celery worker (``cpu``, ``gpu``).
    """

    base_env: dict[str, str]
    run_dir: Path
    worker_concurrency: dict[str, int] = field(default_factory=lambda: {"cpu": 2, "gpu": 1})
    api_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)
    services: list[Service] = field(default_factory=list)
    _token: str | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def broker_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def environment(self) -> dict[str, str]:
        """The Airflow settings every service of the stack shares."""
        env = dict(self.base_env)
        secret = env.get("AIRFLOW__API_AUTH__JWT_SECRET") or secrets.token_urlsafe(32)
        env.update({
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
            "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__API__BASE_URL": f"{self.api_url}/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API_AUTH__JWT_SECRET": secret,  # the api-server signs, the workers' task runners present
            "AIRFLOW__API__SECRET_KEY": env.get("AIRFLOW__API__SECRET_KEY") or secrets.token_urlsafe(32),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # the caller unpauses what it wants run
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "NO_PROXY": "*",
        })
        return env

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self, dag_ids: list[str], unpaused: list[str], timeout_s: float = 240.0) -> None:
        """Start every service, wait until the API is healthy and ``dag_ids`` are parsed, set their pause state
        (``unpaused`` run, the rest stay paused), then start the scheduler and the workers."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        env = self.environment()
        deadline = time.monotonic() + timeout_s
        try:
            self._start("redis", [_redis_server(), "--bind", "127.0.0.1", "--port", str(self.redis_port),
                                  "--save", "", "--appendonly", "no", "--dir", str(self.run_dir)], env)
            self._start_airflow(env, dag_ids, unpaused, deadline)
            for name, queue in QUEUES.items():
                worker_env = env | {WORKER_NAME_ENV: name,
                                    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "lm_insights.runtime.services.worker_hostname"}
                self._start(f"worker-{name}", _airflow(
                    "celery", "worker", "--queues", queue, "--celery-hostname", f"{name}@%h",
                    "--concurrency", str(self.worker_concurrency[name]), "--skip-serve-logs",
                    "--without-gossip", "--without-mingle"), worker_env)
            for name in QUEUES:
                self.wait_until(lambda: " ready." in self.service(f"worker-{name}").tail(200),
                                f"Celery worker {name} to be ready", deadline)
        except BaseException:
            self.stop()
            raise

    def _start_airflow(self, env: dict[str, str], dag_ids: list[str], unpaused: list[str], deadline: float) -> None:
        """api-server and dag-processor; once ``dag_ids`` are parsed and (un)paused, the scheduler; wait healthy."""
        self._start("api-server", _airflow("api-server", "--host", "127.0.0.1", "--port", str(self.api_port),
                                           "--workers", "1"), env)
        self._start("dag-processor", _airflow("dag-processor"), env)
        self.wait_until(lambda: self._health().get("metadatabase", {}).get("status") == "healthy",
                        "the api-server to answer /api/v2/monitor/health", deadline)
        for dag_id in dag_ids:
            self.wait_until(lambda: self.get_dag(dag_id) is not None, f"DAG {dag_id} to be parsed", deadline)
            self.set_paused(dag_id, dag_id not in unpaused)
        self._start("scheduler", _airflow("scheduler"), env)
        self.wait_until(lambda: self._health().get("scheduler", {}).get("status") == "healthy"
                        and self._health().get("dag_processor", {}).get("status") == "healthy",
                        "the scheduler and the dag-processor to report healthy", deadline)

    def _start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        service = Service(name, command, self.run_dir / f"{name}.log")
        service.start(env, self.run_dir)
        self.services.append(service)

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def stop(self) -> None:
        """Stop the services, the workers first (they hold task processes), Redis last."""
        for service in sorted(self.services, key=lambda s: (s.name == "redis", not s.name.startswith("worker"))):
            service.stop()

    def tails(self, lines: int = 40) -> str:
        """The last lines of every service's log, for a failure message."""
        return "\n".join(f"----- {s.name} ({s.log_path}, {'running' if s.running() else 'exited'}) -----\n"
                         f"{s.tail(lines)}" for s in self.services)

    def check_running(self) -> None:
        dead = [s.name for s in self.services if not s.running()]
        if dead:
            raise ServiceError(f"services exited: {dead}\n{self.tails()}")

    def wait_until(self, condition, what: str, deadline: float, interval_s: float = 1.0) -> None:
        """Poll ``condition`` until it holds; fail naming ``what`` with the logs' tails at the deadline."""
        while True:
            self.check_running()
            try:
                if condition():
                    return
            except (OSError, ApiError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise ServiceError(f"timed out waiting for {what}\n{self.tails()}")
            time.sleep(interval_s)

    # -- REST ------------------------------------------------------------------------------------------------
    def token(self) -> str:
        """A JWT for the REST API: the admin's, for the password in SimpleAuthManager's password file."""
        if self._token is None:
            path = self.base_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
            username, password = next(iter(json.loads(Path(path).read_text()).items()))
            self._token = self.request("POST", "/auth/token", {"username": username, "password": password},
                                       auth=False)["access_token"]
        return self._token

    def request(self, method: str, path: str, body: Any = None, auth: bool = True,
                timeout_s: float = 30.0) -> Any:
        """One REST call; returns the decoded JSON, raises :class:`ApiError` with status and body otherwise."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        request = urllib.request.Request(self.api_url + path, method=method, headers=headers,
                                         data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            raise ApiError(method, path, exc.code, exc.read().decode(errors="replace")) from None
        return json.loads(text) if text else None

    def _health(self) -> dict:
        return self.request("GET", "/api/v2/monitor/health", auth=False, timeout_s=5)

    def get_dag(self, dag_id: str) -> dict | None:
        try:
            return self.request("GET", f"/api/v2/dags/{dag_id}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}?update_mask=is_paused", {"is_paused": paused})

    def trigger(self, dag_id: str, conf: dict, run_id: str | None = None, logical_date: str | None = None) -> dict:
        """``POST /dags/{dag_id}/dagRuns``: the Params in ``conf`` are validated before the run is created."""
        return self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                            {"dag_run_id": run_id, "logical_date": logical_date, "conf": conf})

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=200")[
            "task_instances"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float = 300.0) -> dict:
        """Poll the DAG run until it is success or failed; at ``timeout_s`` fail with its task states and logs."""
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return run
            self.check_running()
            if time.monotonic() > deadline:
                states = [(t["task_id"], t["map_index"], t["state"]) for t in self.task_instances(dag_id, run_id)]
                raise ServiceError(f"{dag_id} {run_id} still {run['state']} after {timeout_s:.0f}s: {states}\n"
                                   f"{self.tails()}")
            time.sleep(2)


@dataclass
class LocalStack(AirflowStack):
    """The embedded default's Airflow: api-server, dag-processor and a scheduler with the LocalExecutor (tasks run as
    the scheduler's child processes; no broker, no workers).

    ``make demo`` runs its backfills through it: the runs get real start and end times, run type ``backfill``, the
    user who started them, and task logs under ``$AIRFLOW_HOME/logs`` that the UI reads.
    """

    def environment(self) -> dict[str, str]:
        env = super().environment()
        for celery_setting in ("AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND",
                               "AIRFLOW__CELERY__SYNC_PARALLELISM"):
            env.pop(celery_setting)
        env["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
        # Only the runs asked for (backfills, triggers): no run of the latest cron interval, which has no demo data.
        # Asset-triggered runs are off too: insights_report runs on the demo's Asset events under `make up`.
        env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"
        return env

    def start(self, dag_ids: list[str], unpaused: list[str], timeout_s: float = 240.0) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_airflow(self.environment(), dag_ids, unpaused, time.monotonic() + timeout_s)
        except BaseException:
            self.stop()
            raise


class ApiError(RuntimeError):
    """A REST call answered with an HTTP error status."""

    def __init__(self, method: str, path: str, status: int, body: str):
        super().__init__(f"{method} {path}: HTTP {status}: {body[:2000]}")
        self.status, self.body = status, body


def _airflow(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("airflow")), *args]


def _redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise ServiceError("redis-server is not installed: run `make system-deps` (apt-get install redis-server)")
    return path
