"""The plain parts of tests/cluster/stack.py, without a container engine: the skip reason, the build's pip settings,
the generated env file."""

from __future__ import annotations

import os

import pytest

from tests.cluster import stack


def test_without_root_the_engine_is_unavailable_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(stack.EngineUnavailable, match="needs root"):
        stack.set_up_engine(tmp_path)


def test_build_gets_the_host_pip_settings_as_read_only_mounts(monkeypatch, tmp_path):
    wheels, index = tmp_path / "wheels", tmp_path / "pypi" / "simple"
    wheels.mkdir()
    index.mkdir(parents=True)
    monkeypatch.setattr(stack, "_pip_config", lambda env: {
        "cert": "/etc/ssl/certs/ca-certificates.crt", "find-links": str(wheels),
        "extra-index-url": f"file://{index} https://mirror.example/simple"})
    mounts = stack.build_mounts({}, tmp_path)
    volumes = [mounts[i + 1] for i in range(0, len(mounts), 2) if mounts[i] == "-v"]
    assert f"/etc/ssl/certs/ca-certificates.crt:{stack.HOST_CA_IN_BUILD}:ro" in volumes
    assert f"{wheels}:{wheels}:ro" in volumes
    assert f"{index.parent}:{index.parent}:ro" in volumes, "an index's pages link to ../../files: its parent"
    assert f"{tmp_path / 'pip.conf'}:/etc/pip.conf:ro" in volumes
    conf = (tmp_path / "pip.conf").read_text().splitlines()
    assert f"cert = {stack.HOST_CA_IN_BUILD}" in conf
    assert f"extra-index-url = file://{index} https://mirror.example/simple" in conf


def test_env_file_has_generated_secrets_local_images_and_stays_out_of_the_repository(tmp_path):
    path, settings = stack.write_env_file(tmp_path, dict(os.environ))
    assert path == tmp_path / "env"
    assert not [k for k, v in settings.items() if v.startswith("change-me")]
    assert (settings["POSTGRES_IMAGE"], settings["WAREHOUSE_IMAGE"], settings["REDIS_IMAGE"]) == (
        stack.POSTGRES_IMAGE, stack.POSTGRES_IMAGE, stack.REDIS_IMAGE)
    assert settings["LM_IMAGE"] == stack.APP_IMAGE and settings["AIRFLOW_API_BIND_ADDRESS"] == "127.0.0.1"
    assert len({settings[k] for k in ("AIRFLOW_API_PUBLISHED_PORT", "POSTGRES_PUBLISHED_PORT",
                                      "REDIS_PUBLISHED_PORT", "WAREHOUSE_PUBLISHED_PORT")}) == 4
    assert path.read_text().count("POSTGRES_IMAGE=") == 1
