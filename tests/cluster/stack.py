"""The cluster deployment (Dockerfile + docker-compose.yml) built and run for real on Podman.

No registry is reachable from the test machines, so every image is built here: a Debian bookworm base made with
``mmdebstrap`` from the Debian mirror and ``podman import``-ed, the Airflow image (``Dockerfile``, target ``cpu``)
on that base, and stand-ins for the public PostgreSQL/pgvector and Redis images (``docker/local/Containerfile``).
pip inside the builds uses the host's pip settings (CA bundle, find-links and local indexes, mounted read-only
into the build steps), so the CPU torch wheel on the host's disk is used; the Dockerfile itself keeps its
public-internet defaults.

Everything this module creates carries the prefix ``lm-clustertest`` (images) or the compose project
``lmclustertest`` (containers, volumes, network); :meth:`ComposeStack.remove` deletes it all and
:func:`leftovers` lists whatever would remain.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from lm_insights.runtime.services import AirflowStack, ServiceError, free_port

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PROJECT = "lmclustertest"
IMAGE_PREFIX = "localhost/lm-clustertest"
BASE_IMAGE = f"{IMAGE_PREFIX}-debian-base:bookworm"
APP_IMAGE, APP_TAG = f"{IMAGE_PREFIX}-airflow", "test"
POSTGRES_IMAGE = f"{IMAGE_PREFIX}-postgres:test"
REDIS_IMAGE = f"{IMAGE_PREFIX}-redis:test"
IMAGES = [f"{APP_IMAGE}:{APP_TAG}", POSTGRES_IMAGE, REDIS_IMAGE, BASE_IMAGE]
COMPOSE_FILES = [ROOT / "docker-compose.yml", ROOT / "docker" / "compose.cpu-only.yml", HERE / "compose.test.yml"]
APT_PACKAGES = ["podman", "runc", "mmdebstrap", "slirp4netns", "uidmap", "fuse-overlayfs"]
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRRORS = ["deb http://deb.debian.org/debian bookworm main",
                  "deb http://deb.debian.org/debian bookworm-updates main",
                  "deb http://deb.debian.org/debian-security bookworm-security main"]
BASE_PACKAGES = ["python3", "python3-venv", "ca-certificates"]
# Podman 4.3 of Debian bookworm: crun fails in this kind of VM, runc works; the default nofile/nproc limits of
# containers.conf exceed what the host allows.
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
"""
HOST_CA_IN_BUILD = "/run/lm-host-pip/ca.crt"
INFRA_SERVICES = ["postgres", "redis", "warehouse-db"]
AIRFLOW_SERVICES = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker-cpu", "airflow-worker-gpu"]
CORE_SERVICES = [*INFRA_SERVICES, *AIRFLOW_SERVICES[:-1]]  # all but the gpu worker, which the kill test kills


class EngineUnavailable(RuntimeError):
    """No container engine can be set up on this machine (the test skips with this reason)."""


class Phases:
    """Wall-clock time of each phase of the test, printed as it ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        started = time.monotonic()
        print(f"[cluster] {name} ...", flush=True)
        try:
            yield
        finally:
            self.seconds[name] = time.monotonic() - started
            print(f"[cluster] {name}: {self.seconds[name]:.1f}s", flush=True)

    def table(self) -> str:
        rows = [f"  {name:<40} {s:7.1f}s" for name, s in self.seconds.items()]
        return "\n".join(["[cluster] phase timings:", *rows, f"  {'total':<40} {sum(self.seconds.values()):7.1f}s"])


def run(command: list[str], env: dict[str, str], timeout_s: float = 600, check: bool = True,
        cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with the command and the tail of its output."""
    try:
        done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"timed out after {timeout_s:.0f}s: {' '.join(command)}\n"
                           f"{(exc.stdout or '')[-3000:]}{(exc.stderr or '')[-3000:]}") from None
    if check and done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {' '.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    return done


# -- the engine ---------------------------------------------------------------------------------------------------
def engine_environment(work: Path) -> dict[str, str]:
    """Podman's settings for this test only (CONTAINERS_CONF in ``work``): the host's configuration is not touched."""
    conf = work / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    env["CONTAINERS_CONF"] = str(conf)
    return env


def podman_compose_command() -> list[str]:
    executable = Path(sys.executable).with_name("podman-compose")
    if not executable.exists():
        raise EngineUnavailable("podman-compose is not installed: pip install -r requirements-dev.txt")
    return [str(executable)]


def set_up_engine(work: Path) -> dict[str, str]:
    """Install Podman, runc and mmdebstrap with apt-get where missing; return the environment for podman."""
    if os.geteuid() != 0:
        raise EngineUnavailable("needs root: Podman and mmdebstrap are installed with apt-get and run rootful")
    podman_compose_command()
    if not all(shutil.which(tool) for tool in ("podman", "runc", "mmdebstrap")):
        apt_env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *APT_PACKAGES]):
            try:
                run(command, apt_env, timeout_s=900)
            except (RuntimeError, OSError) as exc:
                raise EngineUnavailable(f"could not install {' '.join(APT_PACKAGES)}: {exc}") from None
    return engine_environment(work)


def check_engine_runs_containers(env: dict[str, str]) -> None:
    try:
        done = run(["podman", "run", "--rm", "--network", "none", BASE_IMAGE, "python3", "-c", "print('ok')"],
                   env, timeout_s=120, check=False)
    except RuntimeError as exc:
        raise EngineUnavailable(f"podman cannot run a container: {exc}") from None
    if done.returncode != 0 or done.stdout.strip() != "ok":
        raise EngineUnavailable(f"podman cannot run a container (exit {done.returncode}): {done.stderr[-2000:]}")


# -- the images ---------------------------------------------------------------------------------------------------
def make_base_image(env: dict[str, str], work: Path) -> None:
    """Debian bookworm (minbase + python3) from the Debian mirror, imported as ``BASE_IMAGE``."""
    tarball = work / "debian-base.tar"
    try:
        run(["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", DEBIAN_SUITE, str(tarball),
             *DEBIAN_MIRRORS], env, timeout_s=900)
    except RuntimeError as exc:
        raise EngineUnavailable(f"mmdebstrap could not make a Debian base from {DEBIAN_MIRRORS[0]}: {exc}") from None
    run(["podman", "import", str(tarball), BASE_IMAGE], env, timeout_s=300)
    tarball.unlink()


def _pip_config(env: dict[str, str]) -> dict[str, str]:
    """The host's effective pip settings (``pip config list``: files and PIP_* variables), last one wins."""
    listed = run([sys.executable, "-m", "pip", "config", "list"], env, timeout_s=60).stdout
    settings: dict[str, str] = {}
    for line in listed.splitlines():
        match = re.match(r"^[^.]*\.([\w-]+)='(.*)'$", line.strip())
        if match:
            settings[match.group(1)] = match.group(2)
    return settings


def build_mounts(env: dict[str, str], work: Path) -> list[str]:
    """``podman build`` options that give the build steps the host's pip settings: a pip.conf with the host's CA
    bundle, find-links and local (file://) indexes, each mounted read-only at the path the settings name."""
    settings = _pip_config(env)
    config = ["[global]", "default-timeout = 180"]
    mounts: list[str] = []
    if cert := settings.get("cert"):
        mounts += ["-v", f"{cert}:{HOST_CA_IN_BUILD}:ro"]
        config.append(f"cert = {HOST_CA_IN_BUILD}")
    for key in ("find-links", "extra-index-url", "index-url"):
        values = settings.get(key, "").split()
        local_dirs = [Path(urlsplit(v).path if v.startswith("file://") else v) for v in values if "://" not in v
                      or v.startswith("file://")]
        for directory in local_dirs:
            # an index's pages link to ../../files/...: mount the folder above `simple`
            mounted = directory.parent if directory.name == "simple" else directory
            if mounted.is_dir():
                mounts += ["-v", f"{mounted}:{mounted}:ro"]
        if values:
            config.append(f"{key} = {' '.join(values)}")
    pip_conf = work / "pip.conf"
    pip_conf.write_text("\n".join(config) + "\n")
    return [*mounts, "-v", f"{pip_conf}:/etc/pip.conf:ro"]


def build_images(env: dict[str, str], work: Path, phase: Phases) -> None:
    mounts = build_mounts(env, work)
    base = ["--build-arg", f"BASE_IMAGE={BASE_IMAGE}"]
    local = ["-f", str(ROOT / "docker" / "local" / "Containerfile")]
    with phase("build postgres+pgvector and redis images"):
        run(["podman", "build", *local, "--target", "postgres", *base, *mounts, "-t", POSTGRES_IMAGE, "."], env)
        run(["podman", "build", *local, "--target", "redis", *base, "-t", REDIS_IMAGE, "."], env)
    with phase("build the Airflow image (target cpu)"):
        # The CPU torch wheel comes from the host's find-links; PyPI serves the rest.
        run(["podman", "build", "--target", "cpu", *base, "--build-arg", "TORCH_INDEX_URL=https://pypi.org/simple",
             *mounts, "-t", f"{APP_IMAGE}:{APP_TAG}", "."], env, timeout_s=1200)


def image_size_mb(env: dict[str, str], image: str) -> float:
    return int(run(["podman", "image", "inspect", "--format", "{{.Size}}", image], env).stdout.strip()) / 1e6


# -- the stack ----------------------------------------------------------------------------------------------------
def write_env_file(work: Path, env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """.env for the test (in ``work``, never in the repository): docker/make-env.sh's generated secrets, the local
    images, free published ports on loopback, small worker concurrency."""
    path = work / "env"
    run(["bash", str(ROOT / "docker" / "make-env.sh"), str(path)], env, timeout_s=60)
    overrides = {
        "LM_IMAGE": APP_IMAGE, "LM_IMAGE_TAG": APP_TAG, "LM_BASE_IMAGE": BASE_IMAGE,
        "POSTGRES_IMAGE": POSTGRES_IMAGE, "WAREHOUSE_IMAGE": POSTGRES_IMAGE, "REDIS_IMAGE": REDIS_IMAGE,
        "AIRFLOW_API_BIND_ADDRESS": "127.0.0.1", "AIRFLOW_API_PUBLISHED_PORT": str(free_port()),
        "POSTGRES_PUBLISHED_PORT": str(free_port()), "REDIS_PUBLISHED_PORT": str(free_port()),
        "WAREHOUSE_PUBLISHED_PORT": str(free_port()),
        "CPU_WORKER_CONCURRENCY": "2", "GPU_WORKER_CONCURRENCY": "1", "LM_GPU_POOL_SLOTS": "1",
    }
    lines, seen = [], set()
    for line in path.read_text().splitlines():
        name = line.split("=", 1)[0]
        if name in overrides:
            line, _ = f"{name}={overrides[name]}", seen.add(name)
        lines.append(line)
    lines += [f"{k}={v}" for k, v in overrides.items() if k not in seen]
    path.write_text("\n".join(lines) + "\n")
    settings = {}
    for line in lines:
        if re.match(r"^[A-Z0-9_]+=", line):
            name, value = line.split("=", 1)
            settings[name] = value
    return path, settings


@dataclass
class ComposeStack(AirflowStack):
    """docker-compose.yml under podman-compose; the REST helpers of :class:`AirflowStack` against its api-server."""

    engine_env: dict[str, str] = field(default_factory=dict)
    env_file: Path | None = None
    settings: dict[str, str] = field(default_factory=dict)

    # -- compose and podman -----------------------------------------------------------------------------------
    def compose(self, *args: str, timeout_s: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        files = [arg for f in COMPOSE_FILES for arg in ("-f", str(f))]
        return run([*podman_compose_command(), "--project-name", PROJECT, "--env-file", str(self.env_file), *files,
                    *args], self.engine_env, timeout_s=timeout_s, check=check)

    def podman(self, *args: str, timeout_s: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["podman", *args], self.engine_env, timeout_s=timeout_s, check=check)

    def container(self, service: str) -> str:
        names = self.podman("ps", "-a", "--filter", f"label=io.podman.compose.project={PROJECT}", "--filter",
                            f"label=io.podman.compose.service={service}", "--format", "{{.Names}}").stdout.split()
        if len(names) != 1:
            raise ServiceError(f"expected one container of service {service}, found {names}")
        return names[0]

    def state(self, service: str) -> dict:
        return json.loads(self.podman("inspect", "--format", "{{json .State}}", self.container(service)).stdout)

    def exec(self, service: str, *command: str, timeout_s: float = 300) -> str:
        return self.podman("exec", self.container(service), *command, timeout_s=timeout_s).stdout

    def psql(self, query: str) -> list[list[str]]:
        """Rows of ``query`` in the warehouse, run by psql inside the warehouse-db container (unaligned, tab)."""
        out = self.exec("warehouse-db", "psql", "-U", self.settings["WAREHOUSE_USER"], "-d",
                        self.settings["WAREHOUSE_DB"], "-v", "ON_ERROR_STOP=1", "-At", "-F", "\t", "-c", query)
        return [line.split("\t") for line in out.splitlines()]

    # -- lifecycle --------------------------------------------------------------------------------------------
    def up(self, timeout_s: float = 420) -> None:
        """Start the stack in two steps: the databases, the broker and airflow-init; once airflow-init has exited
        with 0, the Airflow services. Plain `podman-compose up` cannot do that with Podman 4.3 (Debian bookworm):
        the `podman create --requires` chains podman-compose makes from depends_on fail at start ("generating
        dependency graph ... not found in input list"), and conditions on health need Podman >= 4.6."""
        self.compose("up", "-d", "--no-build", "--no-deps", *INFRA_SERVICES, "airflow-init", timeout_s=timeout_s)
        self.wait_for_init()
        self.compose("up", "-d", "--no-build", "--no-deps", *AIRFLOW_SERVICES, timeout_s=timeout_s)

    def wait_for_init(self, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.state("airflow-init")
            if state["Status"] == "exited":
                if state["ExitCode"] != 0:
                    raise ServiceError(f"airflow-init exited with {state['ExitCode']}\n{self.tails()}")
                return
            if time.monotonic() > deadline:
                raise ServiceError(f"airflow-init still {state['Status']} after {timeout_s:.0f}s\n{self.tails()}")
            time.sleep(2)

    def wait_for_dags(self, dag_ids: list[str], timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        self.wait_until(lambda: self._health()["metadatabase"]["status"] == "healthy", "the api-server", deadline, 2)
        self.wait_until(lambda: all(self.get_dag(d) for d in dag_ids), f"DAGs {dag_ids} parsed", deadline, 2)

    def remove(self, before: dict[str, set[str]]) -> None:
        """``podman-compose down -v``, then everything else made since ``before`` (:func:`remove_everything`)."""
        if self.env_file is not None and self.env_file.exists():
            self.compose("down", "-v", "--timeout", "10", timeout_s=300, check=False)
        remove_everything(self.engine_env, before)

    # -- AirflowStack -----------------------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.settings['AIRFLOW_API_PUBLISHED_PORT']}"

    def token(self) -> str:
        """A JWT for the admin user of the SimpleAuthManager (its password file is written by airflow-init)."""
        if self._token is None:
            self._token = self.request("POST", "/auth/token", {"username": self.settings["AIRFLOW_ADMIN_USERNAME"],
                                                               "password": self.settings["AIRFLOW_ADMIN_PASSWORD"]},
                                       auth=False)["access_token"]
        return self._token

    def check_running(self) -> None:
        dead = [s for s in CORE_SERVICES if self.state(s)["Status"] != "running"]
        if dead:
            raise ServiceError(f"containers not running: {dead}\n{self.tails()}")

    def tails(self, lines: int = 40) -> str:
        out = []
        for service in [*INFRA_SERVICES, "airflow-init", *AIRFLOW_SERVICES]:
            logs = self.podman("logs", "--tail", str(lines), self.container(service), check=False)
            out.append(f"--- {service} ---\n{logs.stdout}{logs.stderr}")
        return "\n".join(out)

    def hostname(self, service: str) -> str:
        """The container's hostname: what Airflow records as the task instances' ``hostname``."""
        return self.podman("inspect", "--format", "{{.Config.Hostname}}", self.container(service)).stdout.strip()

    def crash(self, service: str) -> int:
        """SIGKILL the container's init process from the host, as an OOM kill or a crash would; return the container's
        restart count before. (``podman kill`` would count as stopped by the user: Podman then skips the restart
        policy, and the container stays down.)"""
        state = self.podman("inspect", "--format", "{{.State.Pid}} {{.RestartCount}}", self.container(service))
        pid, restarts = (int(v) for v in state.stdout.split())
        os.kill(pid, 9)
        return restarts

    def wait_for_restart(self, service: str, restarts_before: int, timeout_s: float = 120) -> dict:
        """Wait until the restart policy has brought the container back; return its state."""
        deadline = time.monotonic() + timeout_s
        while True:
            out = self.podman("inspect", "--format", "{{.RestartCount}} {{json .State}}", self.container(service))
            restarts, state = out.stdout.split(" ", 1)
            state = json.loads(state)
            if int(restarts) > restarts_before and state["Status"] == "running":
                return state
            if time.monotonic() > deadline:
                raise ServiceError(f"{service} not restarted after {timeout_s:.0f}s: {restarts} restarts, {state}")
            time.sleep(1)

    def fill_demo_warehouse(self, start: str, days: int, scale: float) -> str:
        """The demo warehouse filler (lm_insights.runtime.demo_warehouse) run in the CPU worker's container."""
        s = self.settings
        conninfo = (f"host={s['WAREHOUSE_HOST']} port={s['WAREHOUSE_PORT']} dbname={s['WAREHOUSE_DB']} "
                    f"user={s['WAREHOUSE_USER']} password={s['WAREHOUSE_PASSWORD']}")
        return self.exec("airflow-worker-cpu", "python", "-m", "lm_insights.runtime.demo_warehouse", "--conninfo",
                         conninfo, "--start", start, "--days", str(days), "--scale", str(scale))

    def insight_dump(self, pipeline: str, day: str) -> dict[str, list[str]]:
        """Every insight table of ``pipeline`` (``insights.<pipeline>_*``), the partition of ``day``, as sorted psql
        lines; left out: timestamps other than the partition bounds (none today) and ``run_id`` (which run wrote
        the row: the guard's checks in ``<pipeline>_quality`` name it)."""
        tables = self.psql(
            "select table_name, string_agg(quote_ident(column_name), ',' order by ordinal_position) "
            "filter (where (data_type not like 'timestamp%' or column_name in ('partition_start', 'partition_end')) "
            "and column_name <> 'run_id') "
            "from information_schema.columns where table_schema = 'insights' "
            f"and table_name like '{pipeline}\_%' group by table_name "
            "having bool_or(column_name = 'partition_start') order by table_name")
        return {table: sorted(line for line in self.exec(
                    "warehouse-db", "psql", "-U", self.settings["WAREHOUSE_USER"], "-d", self.settings["WAREHOUSE_DB"],
                    "-v", "ON_ERROR_STOP=1", "-At", "-c",
                    f"select {columns} from insights.{table} where partition_start = '{day}'::date").splitlines())
                for table, columns in tables}

    def peak_memory_mb(self) -> dict[str, float | None]:
        """Peak memory of each service's container since it started (cgroup v1 ``memory.max_usage_in_bytes`` or v2
        ``memory.peak``); None where the kernel does not expose it."""
        peaks: dict[str, float | None] = {}
        for service in [*INFRA_SERVICES, *AIRFLOW_SERVICES]:
            cgroup = self.podman("inspect", "--format", "{{.State.CgroupPath}}", self.container(service)).stdout.strip()
            candidates = [Path(f"/sys/fs/cgroup/memory{cgroup}/memory.max_usage_in_bytes"),
                          Path(f"/sys/fs/cgroup{cgroup}/memory.peak")]
            found = next((c for c in candidates if cgroup and c.is_file()), None)
            peaks[service] = int(found.read_text()) / 2**20 if found else None
        return peaks

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> list[dict]:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/"
                                   "tries")["task_instances"]


LISTINGS = {
    "container": ["podman", "ps", "-a", "--format", "{{.ID}} {{.Names}}"],
    "volume": ["podman", "volume", "ls", "--format", "{{.Name}}"],
    "network": ["podman", "network", "ls", "--format", "{{.Name}}"],
    "image": ["podman", "images", "-a", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}"],
}


def snapshot(env: dict[str, str]) -> dict[str, set[str]]:
    """Every container, volume, network and image (intermediate build layers included) that exists now."""
    return {kind: set(run(listing, env, check=False).stdout.splitlines()) for kind, listing in LISTINGS.items()}


def leftovers(env: dict[str, str], before: dict[str, set[str]]) -> list[str]:
    """What exists now and did not before the test."""
    now = snapshot(env)
    return [f"{kind} {entry}" for kind in LISTINGS for entry in sorted(now[kind] - before[kind])]


def remove_everything(env: dict[str, str], before: dict[str, set[str]]) -> None:
    """Remove every container, volume, network and image made since ``before`` (best effort)."""
    new = {kind: {entry.split()[0] for entry in snapshot(env)[kind] - before[kind]} for kind in LISTINGS}
    for kind, remove in (("container", ["podman", "rm", "-f"]), ("volume", ["podman", "volume", "rm", "-f"]),
                         ("network", ["podman", "network", "rm", "-f"])):
        if new[kind]:
            run([*remove, *sorted(new[kind])], env, check=False)
    for image in IMAGES:
        run(["podman", "rmi", "-f", image], env, check=False)
    remaining = {entry.split()[0] for entry in snapshot(env)["image"] - before["image"]}
    if remaining:
        run(["podman", "rmi", "-f", *sorted(remaining)], env, check=False)
