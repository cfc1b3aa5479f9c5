"""The cluster deployment built and run for real: the Dockerfile's CPU image on a Debian base made here, the compose
stack of docker-compose.yml started with podman-compose (metadata PostgreSQL, warehouse PostgreSQL + pgvector, Redis,
api-server, scheduler, dag-processor, triggerer, a CPU worker and a worker on queue `gpu` running the CPU build),
a pipeline triggered through the REST API, then the `gpu` worker's container killed while an infer shard runs.

Skipped, with the reason, where no container engine can be set up (not root, apt-get fails, Podman cannot run a
container). The phase timings are printed at the end (pytest -s shows them). The logic is in tests/cluster/stack.py.
"""

from __future__ import annotations

import time

import pytest

from tests.cluster.stack import (ComposeStack, EngineUnavailable, Phases, build_images, check_engine_runs_containers,
                   image_size_mb, leftovers, make_base_image, remove_everything, set_up_engine, snapshot,
                   write_env_file, APP_IMAGE, APP_TAG)

pytestmark = pytest.mark.slow

PIPELINE = "product_sales"
DAY = "2026-11-02"  # 300 catalogue sales + the mess rows of the demo warehouse: three shards of about 100 rows
SHARDS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The running stack with the demo warehouse filled and the pipeline unpaused; removed afterwards, and nothing
    this module made (container, volume, network, image, build layer) may remain."""
    work = tmp_path_factory.mktemp("cluster")
    phase = Phases()
    try:
        with phase("set up podman, runc, mmdebstrap (apt-get where missing)"):
            env = set_up_engine(work)
    except EngineUnavailable as exc:
        print(f"[cluster] skipped: {exc}")
        pytest.skip(f"no container engine: {exc}")
    before = snapshot(env)
    stack = None
    try:
        with phase("Debian bookworm base image (mmdebstrap + podman import)"):
            make_base_image(env, work)
        try:
            check_engine_runs_containers(env)
        except EngineUnavailable as exc:
            print(f"[cluster] skipped: {exc}")
            pytest.skip(f"no container engine: {exc}")
        build_images(env, work, phase)
        print(f"[cluster] Airflow image: {image_size_mb(env, f'{APP_IMAGE}:{APP_TAG}'):.0f} MB")
        env_file, settings = write_env_file(work, env)
        stack = ComposeStack(base_env={}, run_dir=work, engine_env=env, env_file=env_file, settings=settings)
        with phase("compose up until the DAGs are parsed"):
            stack.up()
            stack.wait_for_dags([PIPELINE])
        with phase("fill the demo warehouse (in the CPU worker)"):
            print(stack.fill_demo_warehouse("2026-11-01", days=2, scale=1.0))
        stack.set_paused(PIPELINE, False)
        yield stack, phase
    finally:
        with phase("compose down -v, remove images"):
            if stack is not None:
                stack.remove(before)
            else:
                remove_everything(env, before)
        print(phase.table())
        left = leftovers(env, before)
        assert not left, f"left behind: {left}"


@pytest.fixture(scope="module")
def undisturbed_run(cluster) -> dict:
    stack, phase = cluster
    with phase(f"pipeline run through REST ({SHARDS} shards)"):
        stack.trigger(PIPELINE, {"partition_start": DAY, "shards": SHARDS}, run_id="undisturbed")
        run = stack.wait_for_run(PIPELINE, "undisturbed", timeout_s=600)
    return {"run": run, "dump": stack.insight_dump(PIPELINE, DAY)}


def runs_record(stack: ComposeStack, run_id: str) -> dict:
    rows = stack.psql("select status, extracted, rejected, cached, computed, loaded from insights.runs "
                      f"where run_id = '{run_id}'")
    assert len(rows) == 1, rows
    status, *counts = rows[0]
    return dict(status=status, **dict(zip(["extracted", "rejected", "cached", "computed", "loaded"], map(int, counts))))


def assert_no_duplicates(stack: ComposeStack, dump: dict[str, list[str]]) -> None:
    for table, lines in dump.items():
        assert len(lines) == len(set(lines)), f"duplicate rows in insights.{table}"
    rows, keys = map(int, stack.psql(f"select count(*), count(distinct sale_id) from insights.{PIPELINE}_rows "
                                     f"where partition_start = '{DAY}'::date")[0])
    assert rows == keys > 0, f"{rows} rows for {keys} sale_ids"


def test_pipeline_through_the_rest_api_runs_infer_on_the_gpu_worker(cluster, undisturbed_run):
    stack, _ = cluster
    assert undisturbed_run["run"]["state"] == "success"
    tis = stack.task_instances(PIPELINE, "undisturbed")
    infer = sorted((t for t in tis if t["task_id"] == "infer"), key=lambda t: t["map_index"])
    others = [t for t in tis if t["task_id"] != "infer"]
    gpu_host, cpu_host = stack.hostname("airflow-worker-gpu"), stack.hostname("airflow-worker-cpu")
    assert gpu_host != cpu_host
    assert [t["map_index"] for t in infer] == list(range(SHARDS))
    for t in infer:
        assert (t["state"], t["queue"], t["pool"], t["hostname"]) == ("success", "gpu", "lm_gpu", gpu_host), t
    assert sorted(t["task_id"] for t in others) == sorted(
        ["plan_partition", "extract", "validate", "textualize", "plan_shards", "insights", "explain", "guard",
         "load", "record_run"])
    for t in others:
        assert (t["state"], t["queue"], t["hostname"]) == ("success", "default", cpu_host), t

    record = runs_record(stack, "undisturbed")
    assert record["status"] == "success" and record["loaded"] > 0, record
    assert record["extracted"] == record["loaded"] + record["rejected"], record
    dump = undisturbed_run["dump"]
    assert len(dump[f"{PIPELINE}_rows"]) == record["loaded"]
    assert len(dump[f"{PIPELINE}_rejects"]) == record["rejected"] > 0
    assert len(dump[f"{PIPELINE}_summaries"]) == 1 and dump[f"{PIPELINE}_segments"] and dump[f"{PIPELINE}_drivers"]
    assert_no_duplicates(stack, dump)


def test_gpu_worker_killed_mid_shard_the_shard_retries_and_the_tables_equal_the_undisturbed_run(cluster,
                                                                                                 undisturbed_run):
    stack, phase = cluster
    with phase("run with the gpu worker killed mid-shard"):
        # force_recompute: every shard encodes its texts again, as the undisturbed run did
        stack.trigger(PIPELINE, {"partition_start": DAY, "shards": SHARDS, "force_recompute": True},
                      run_id="worker_killed")
        deadline = time.monotonic() + 300
        while not (running := [t for t in stack.task_instances(PIPELINE, "worker_killed")
                               if t["task_id"] == "infer" and t["state"] == "running"]):
            assert time.monotonic() < deadline, "no infer shard started within 300s"
            time.sleep(0.3)
        killed = running[0]["map_index"]
        restarts = stack.crash("airflow-worker-gpu")
        print(f"[cluster] killed the gpu worker while shard {killed} ran")
        stack.wait_for_restart("airflow-worker-gpu", restarts)
        run = stack.wait_for_run(PIPELINE, "worker_killed", timeout_s=600)
    assert run["state"] == "success"

    tries = stack.tries(PIPELINE, "worker_killed", "infer", killed)
    assert [(t["try_number"], t["state"]) for t in tries] == [(1, "failed"), (2, "success")], tries
    gpu_host = stack.hostname("airflow-worker-gpu")  # the same container, restarted by its restart policy
    assert all(t["hostname"] == gpu_host and t["queue"] == "gpu" for t in tries), tries

    record, before = runs_record(stack, "worker_killed"), runs_record(stack, "undisturbed")
    assert record["status"] == "success" and record["computed"] > 0, record
    assert (record["extracted"], record["rejected"], record["loaded"]) == (
        before["extracted"], before["rejected"], before["loaded"])
    dump = stack.insight_dump(PIPELINE, DAY)
    assert dump == undisturbed_run["dump"]
    assert_no_duplicates(stack, dump)
    print("[cluster] peak memory per container (MiB):",
          ", ".join(f"{service} {mb:.0f}" if mb is not None else f"{service} ?"
                    for service, mb in stack.peak_memory_mb().items()))
