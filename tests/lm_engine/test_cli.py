import json

import numpy as np
import pytest

from lm_engine.cli import main


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_encode_writes_vectors_in_input_order(tmp_path, engine):
    texts = ["A long review about the battery. " * 40, "", "短い", "Product: lamp. Price: 20 yuan."]
    write_jsonl(tmp_path / "texts.jsonl", [{"text": t, "id": i} for i, t in enumerate(texts)])
    main(["encode", "--device", "cpu", "--input", str(tmp_path / "texts.jsonl"), "--output", str(tmp_path / "v.npy")])
    vectors = np.load(tmp_path / "v.npy")
    assert vectors.dtype == np.float32 and vectors.shape == (4, 384)
    assert np.abs(vectors - engine.encode(texts).vectors).max() <= 1e-6


def test_bad_line_is_named(tmp_path, capsys):
    (tmp_path / "texts.jsonl").write_text('{"text": "fine"}\n{"txt": "no text field"}\n', encoding="utf-8")
    with pytest.raises(SystemExit, match=r"texts.jsonl:2: expected an object with a string \"text\" field"):
        main(["encode", "--device", "cpu", "--input", str(tmp_path / "texts.jsonl"),
              "--output", str(tmp_path / "v.npy")])
    (tmp_path / "texts.jsonl").write_text('{"text": "fine"}\n{"text": "ok"}\nnot json\n', encoding="utf-8")
    with pytest.raises(SystemExit, match=r"texts.jsonl:3: not valid JSON"):
        main(["encode", "--device", "cpu", "--input", str(tmp_path / "texts.jsonl"),
              "--output", str(tmp_path / "v.npy")])


def test_classify_writes_one_label_per_line(tmp_path):
    labels = {"praise": "a happy customer praising the product", "defect": "the product is broken or faulty"}
    (tmp_path / "labels.json").write_text(json.dumps(labels), encoding="utf-8")
    write_jsonl(tmp_path / "texts.jsonl", [{"text": "Wonderful, I love it, great quality!"},
                                           {"text": "It broke after one day, faulty unit."}])
    main(["classify", "--device", "cpu", "--labels", str(tmp_path / "labels.json"),
          "--input", str(tmp_path / "texts.jsonl"), "--output", str(tmp_path / "labels.jsonl")])
    rows = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == ["praise", "defect"]
    assert all(r["margin"] >= 0.02 and 0 < r["score"] <= 1 for r in rows)


def test_unknown_model_fails_with_the_known_names(tmp_path):
    write_jsonl(tmp_path / "texts.jsonl", [{"text": "x"}])
    with pytest.raises(SystemExit, match="known models: all-MiniLM-L6-v2"):
        main(["encode", "--model", "no-such-model", "--input", str(tmp_path / "texts.jsonl"),
              "--output", str(tmp_path / "v.npy")])
