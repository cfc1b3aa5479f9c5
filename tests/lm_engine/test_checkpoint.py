"""Loading fails loudly, naming what is missing, extra, mis-shaped or unsupported."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lm_engine.checkpoint import CheckpointError, load_model, load_tokenizer, read_config


def rewrite_weights(model_copy, edit):
    path = model_copy / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    path.unlink()  # the symlink to the package's file
    save_file(tensors, path)


def edit_config(model_copy, **changes):
    path = model_copy / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_loaded_weights_equal_the_checkpoint(model_dir):
    model = load_model(model_dir)
    tensors = load_file(model_dir / "model.safetensors")
    state = model.state_dict()
    assert len(state) == 101  # 5 embedding tensors + 6 blocks x 16; position_ids and pooler are skipped
    for key, value in state.items():
        assert torch.equal(value, tensors[key]), key
    assert model.config.pooling == "mean" and model.config.normalize is True


def test_missing_tensor_is_named(model_copy):
    rewrite_weights(model_copy, lambda t: t.pop("encoder.layer.3.attention.self.key.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensors: \['encoder.layer.3.attention.self.key.weight'\]"):
        load_model(model_copy)


def test_extra_tensor_is_named(model_copy):
    rewrite_weights(model_copy, lambda t: t.update({"encoder.layer.6.output.dense.bias": torch.zeros(384)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensors: \['encoder.layer.6.output.dense.bias'\]"):
        load_model(model_copy)


def test_wrong_shape_is_named(model_copy):
    def shrink(tensors):
        tensors["encoder.layer.0.intermediate.dense.weight"] = torch.zeros(1024, 384)

    rewrite_weights(model_copy, shrink)
    with pytest.raises(CheckpointError, match=r"encoder.layer.0.intermediate.dense.weight: checkpoint \(1024, 384\), "
                                              r"model \(1536, 384\)"):
        load_model(model_copy)


def test_unsupported_architecture_is_named(model_copy):
    edit_config(model_copy, model_type="gpt2")
    with pytest.raises(CheckpointError, match="model_type 'gpt2' is not supported; supported: bert"):
        load_model(model_copy)


def test_relative_position_embeddings_are_refused(model_copy):
    edit_config(model_copy, position_embedding_type="relative_key")
    with pytest.raises(CheckpointError, match="relative_key"):
        read_config(model_copy)


def test_unsupported_pooling_is_named(model_copy):
    path = model_copy / "1_Pooling" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "pooling_mode_max_tokens": True}))
    with pytest.raises(CheckpointError, match="pooling_mode_max_tokens"):
        read_config(model_copy)


def test_cls_pooling_and_no_normalize_follow_the_sentence_transformers_files(model_copy):
    (model_copy / "1_Pooling" / "config.json").write_text(json.dumps(
        {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    (model_copy / "modules.json").unlink()
    config = read_config(model_copy)
    assert config.pooling == "cls" and config.normalize is False


def test_missing_tokenizer_is_named(model_copy):
    (model_copy / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.json is missing"):
        load_tokenizer(model_copy, 256)
