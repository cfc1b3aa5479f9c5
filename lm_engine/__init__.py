"""lm_engine: a BERT-family sentence encoder in PyTorch, loaded from local checkpoints, with zero-shot labels
and trained heads (lm_engine.train, imported on demand: it pulls in scikit-learn)."""

from lm_engine.engine import EncodeResult, Engine, load_engine
from lm_engine.zero_shot import Classification, classify_vectors, label_set_version

__all__ = ["load_engine", "Engine", "EncodeResult", "Classification", "classify_vectors", "label_set_version"]
