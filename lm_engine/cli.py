"""
Command line:

    python -m lm_engine encode   --model all-MiniLM-L6-v2 --input texts.jsonl --output vectors.npy
    python -m lm_engine classify --labels labels.json --input texts.jsonl --output labels.jsonl
    python -m lm_engine bench    [--n 2000] [--json out.json] [--device cpu]
    python -m lm_engine quality  [--json artifacts/quality.json] [--min-precision 0.9] [--skip-setfit]

texts.jsonl holds one JSON object with a string "text" field per line; outputs are in input order.
labels.json is {label: description}.
"""

import argparse
import json
import logging
import sys

import numpy as np

from lm_engine import bench, quality
from lm_engine.engine import load_engine
from lm_engine.registry import DEFAULT_MODEL


def read_texts(path):
    """The "text" field of every line of a JSONL file; a bad line raises ValueError naming its line number."""
    texts = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise ValueError(f"{path}:{lineno}: expected an object with a string \"text\" field")
            texts.append(row["text"])
    return texts


def encode(args):
    vectors = load_engine(args.model, args.device).encode(read_texts(args.input)).vectors
    np.save(args.output, vectors)


def classify(args):
    with open(args.labels, encoding="utf-8") as f:
        labels = json.load(f)
    results = load_engine(args.model, args.device).classify(read_texts(args.input), labels, args.min_margin)
    with open(args.output, "w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps({"label": r.label, "score": r.score, "margin": r.margin}, ensure_ascii=False) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lm_engine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, run in (("encode", encode), ("classify", classify)):
        sub = commands.add_parser(name)
        sub.set_defaults(run=run)
        sub.add_argument("--model", default=DEFAULT_MODEL, help="registry name or absolute model directory")
        sub.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: $LM_DEVICE, else auto)")
        sub.add_argument("--input", required=True, help="JSONL with a \"text\" field per line")
        sub.add_argument("--output", required=True)
        if name == "classify":
            sub.add_argument("--labels", required=True, help="JSON object {label: description}")
            sub.add_argument("--min-margin", type=float, default=0.02, help="below it the label is 'uncertain'")
    sub = commands.add_parser("bench", help="lm_engine vs sentence-transformers on a synthetic corpus")
    sub.set_defaults(run=bench.run)
    bench.add_arguments(sub)
    sub = commands.add_parser("quality", help="accuracy of zero-shot, linear, finetune and SetFit on real reviews")
    sub.set_defaults(run=quality.run)
    quality.add_arguments(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.run(args)
    except (ValueError, LookupError, OSError) as e:
        sys.exit(f"error: {e}")
