"""How unsure a distribution over labels is: shared by the heads (learn/) and the ambiguity flags (guard/)."""

from __future__ import annotations

import numpy as np


def normalized_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Per row, the entropy of a distribution over k labels divided by ln k: 0 one label is certain, 1 all are
    equally likely (so one threshold fits label sets of any size)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    p = p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)
    logs = np.log(np.where(p > 0, p, 1.0))
    return np.clip(-(p * logs).sum(axis=1) / np.log(p.shape[1]), 0.0, 1.0)
