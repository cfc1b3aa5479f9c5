"""
Load a BERT-family checkpoint from a local directory in Hugging Face layout:

    config.json                  architecture hyper-parameters
    model.safetensors            the weights, named as BertModel names them
    tokenizer.json               the `tokenizers` pipeline (normaliser, WordPiece, [CLS] ... [SEP] template)
    sentence_bert_config.json    max_seq_length                       (optional; default max_position_embeddings)
    modules.json                 whether a Normalize module follows    (optional; default: no normalisation)
    1_Pooling/config.json        pooling mode                         (optional; default: mean)

Every tensor key and shape is checked before a one-to-one copy; anything missing, extra or unsupported raises
CheckpointError naming it. Nothing is ever downloaded.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from lm_engine.model import BertConfig, BertModel

SUPPORTED_MODEL_TYPES = ("bert",)
# Tensors a BertModel checkpoint carries that sentence embeddings do not use. Skipping them is harmless:
# position_ids is the constant arange(max_position_embeddings) buffer, and the pooler is the tanh head
# BERT trained for next-sentence prediction, which sentence-transformers never calls.
IGNORED_KEYS = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")
# 1_Pooling/config.json flag -> our pooling mode; any other flag set to true is unsupported
POOLING_FLAGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}


class CheckpointError(ValueError):
    """The model directory is not a checkpoint this engine can load exactly."""


def _read_json(path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; a model directory needs config.json, model.safetensors "
                              f"and tokenizer.json") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None


def read_pooling(model_dir):
    """The pooling mode from 1_Pooling/config.json (mean when the directory has none, as sentence-transformers)."""
    path = Path(model_dir) / "1_Pooling" / "config.json"
    if not path.exists():
        return "mean"
    flags = {k: v for k, v in _read_json(path).items() if k.startswith("pooling_mode_") and v is True}
    unsupported = sorted(set(flags) - set(POOLING_FLAGS))
    if unsupported or len(flags) != 1:
        raise CheckpointError(f"{path}: pooling {sorted(flags)} is not supported; "
                              f"exactly one of {sorted(POOLING_FLAGS)} must be true")
    return POOLING_FLAGS[next(iter(flags))]


def read_normalize(model_dir):
    """True when modules.json lists a sentence-transformers Normalize module."""
    path = Path(model_dir) / "modules.json"
    if not path.exists():
        return False
    return any(m.get("type", "").endswith(".Normalize") for m in _read_json(path))


def read_config(model_dir):
    """BertConfig from config.json plus the sentence-transformers pooling/normalisation settings."""
    path = Path(model_dir) / "config.json"
    hf = _read_json(path)
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(f"{path}: model_type {model_type!r} is not supported; "
                              f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"{path}: position_embedding_type {hf['position_embedding_type']!r} is not "
                              f"supported; only 'absolute' is")
    fields = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "hidden_act", "max_position_embeddings", "type_vocab_size", "layer_norm_eps")
    missing = [f for f in fields if f not in hf]
    if missing:
        raise CheckpointError(f"{path}: missing fields {missing}")
    dropout = {f: hf[f] for f in ("hidden_dropout_prob", "attention_probs_dropout_prob") if f in hf}
    try:
        return BertConfig(**{f: hf[f] for f in fields}, **dropout, pooling=read_pooling(model_dir),
                          normalize=read_normalize(model_dir))
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None


def load_model(model_dir):
    """A BertModel in eval mode with every weight copied from model_dir/model.safetensors, checked first."""
    model = BertModel(read_config(model_dir))
    path = Path(model_dir) / "model.safetensors"
    if not path.exists():
        raise CheckpointError(f"{path} is missing")
    tensors = {k: v for k, v in load_file(path).items() if k not in IGNORED_KEYS}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    wrong_shape = [f"{k}: checkpoint {tuple(tensors[k].shape)}, model {tuple(expected[k].shape)}"
                   for k in sorted(set(expected) & set(tensors)) if tensors[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing tensors: {missing}")
    if extra:
        problems.append(f"unexpected tensors: {extra}")
    if wrong_shape:
        problems.append(f"wrong shapes: {wrong_shape}")
    if problems:
        raise CheckpointError(f"{path} does not match the model built from config.json: " + "; ".join(problems))
    with torch.no_grad():
        for k, v in tensors.items():
            expected[k].copy_(v)
    return model.eval()


def read_max_seq_length(model_dir, config):
    """Truncation length: sentence_bert_config.json's max_seq_length, never beyond the position table."""
    path = Path(model_dir) / "sentence_bert_config.json"
    max_len = _read_json(path).get("max_seq_length") if path.exists() else None
    return min(max_len or config.max_position_embeddings, config.max_position_embeddings)


def load_tokenizer(model_dir, max_seq_length):
    """The checkpoint's tokenizer, truncating to max_seq_length (specials included) and never padding."""
    path = Path(model_dir) / "tokenizer.json"
    if not path.exists():
        raise CheckpointError(f"{path} is missing")
    tokenizer = Tokenizer.from_file(str(path))
    # tokenizer.json files often carry the padding/truncation of their last use (all-MiniLM: pad to 128)
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_seq_length)
    return tokenizer
