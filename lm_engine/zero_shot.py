"""
Zero-shot classification: each label's description becomes a prototype embedding; a text takes the label of
the nearest prototype by cosine, unless the runner-up is within min_margin, in which case it is "uncertain".

classify_vectors works on vectors already computed (the platform caches embeddings), and label_set_version
gives the cache key part that changes whenever the labels, their descriptions, min_margin or the prototype
template change.
"""

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

UNCERTAIN = "uncertain"
# "label: description" gives the encoder the label word itself as well as its explanation
PROTOTYPE_TEMPLATE = "{label}: {description}"


@dataclass(frozen=True)
class Classification:
    label: str  # the nearest prototype's label, or UNCERTAIN when margin < min_margin
    score: float  # cosine similarity to the nearest prototype
    margin: float  # score minus the cosine to the runner-up prototype
    best: str = ""  # the nearest prototype's label even when `label` is UNCERTAIN
    scores: dict = field(default_factory=dict)  # cosine to every label's prototype: what occlusion compares


def prototype_texts(labels):
    """The texts to encode as prototypes, one per label of {label: description}, in the dict's order."""
    if len(labels) < 2:
        raise ValueError(f"a label set needs at least 2 labels to have a margin, got {list(labels)}")
    if UNCERTAIN in labels:
        raise ValueError(f"{UNCERTAIN!r} is reserved for texts below min_margin; rename that label")
    for label, description in labels.items():
        if not isinstance(label, str) or not isinstance(description, str):
            raise TypeError(f"labels must map str -> str; got {label!r}: {description!r}")
    return [PROTOTYPE_TEMPLATE.format(label=label, description=description) for label, description in labels.items()]


def classify_vectors(vectors, prototypes, labels, min_margin=0.02):
    """One Classification per row of vectors (n, d); prototypes (k, d) are in the order of labels (k names)."""
    labels = list(labels)
    vectors = np.asarray(vectors, dtype=np.float32)
    prototypes = np.asarray(prototypes, dtype=np.float32)
    if len(labels) < 2 or prototypes.shape[0] != len(labels):
        raise ValueError(f"need one prototype per label and at least 2 labels; got {prototypes.shape[0]} "
                         f"prototypes for labels {labels}")
    if vectors.ndim != 2 or vectors.shape[1] != prototypes.shape[1]:
        raise ValueError(f"vectors {vectors.shape} and prototypes {prototypes.shape} differ in dimension")
    # cosine, so vectors from a model without a Normalize module are handled too
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    proto = prototypes / np.maximum(np.linalg.norm(prototypes, axis=1, keepdims=True), 1e-12)
    cosine = unit @ proto.T  # (n, k)
    runner_up, best = np.argsort(cosine, axis=1, kind="stable")[:, -2:].T
    rows = np.arange(len(cosine))
    scores, margins = cosine[rows, best], cosine[rows, best] - cosine[rows, runner_up]
    return [Classification(label=labels[b] if m >= min_margin else UNCERTAIN, score=float(s), margin=float(m),
                           best=labels[b], scores=dict(zip(labels, map(float, row))))
            for b, s, m, row in zip(best, scores, margins, cosine)]


def label_set_version(labels, min_margin):
    """Short sha256 of the canonical JSON of the label set, min_margin and prototype template: a cache key."""
    canonical = json.dumps({"labels": labels, "min_margin": min_margin, "template": PROTOTYPE_TEMPLATE},
                           sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
