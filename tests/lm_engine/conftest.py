"""Session fixtures: the default model, the lm_engine Engine and the sentence-transformers reference load once."""

import shutil

import pytest

from lm_engine import load_engine, registry

# Parity corpus: short, long (past max_seq_length, truncated), empty, whitespace, CJK, emoji, HTML entities.
PARITY_TEXTS = [
    "",
    "   ",
    "ok",
    "Great product!",
    "Product: rice cooker. Price: 299 yuan. Units sold: 1200. Region: East.",
    "The battery died after two days &amp; support never answered &lt;sigh&gt;.",
    "质量很好，物流也很快，下次还会再买。",
    "東京の店舗で購入しました。とても満足しています。",
    "배송이 빨라서 좋았어요",
    "Love it 😍🔥👍 would buy again 🎉",
    "Café crème brûlée naïve résumé",
    "&quot;Best&quot; purchase &#39;ever&#39; &nbsp; — really",
    "<p>HTML <b>markup</b> stays as text</p>",
    "UPPER case AND lower case",
    "numbers 3.14159 2,000,000 -42 1e-9",
    "The quick brown fox jumps over the lazy dog. " * 80,
    "word " * 254,
    "word " * 255,
    "supercalifragilisticexpialidocious " * 300,
    "退货流程太复杂了。" * 100,
    "Shipping was slow but the product is fine. " * 30 + "😀" * 50,
]


@pytest.fixture(scope="session")
def parity_texts():
    return PARITY_TEXTS


@pytest.fixture(scope="session")
def model_dir():
    return registry.resolve(registry.DEFAULT_MODEL)


@pytest.fixture(scope="session")
def engine():
    return load_engine(registry.DEFAULT_MODEL, device="cpu")


@pytest.fixture(scope="session")
def reference(model_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu")


@pytest.fixture
def model_copy(model_dir, tmp_path):
    """A copy of the model directory to edit; model.safetensors is a symlink until a test rewrites it."""
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("model.safetensors"))
    (copy / "model.safetensors").symlink_to(model_dir / "model.safetensors")
    return copy
