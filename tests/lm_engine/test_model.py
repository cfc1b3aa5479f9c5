import math

import pytest
import torch

from lm_engine.model import POOLING_MODES, BertConfig, BertModel, pool, sinusoidal_table


def test_sinusoidal_table_follows_the_formula():
    table = sinusoidal_table(50, 16)
    assert table.shape == (50, 16) and table.dtype == torch.float32
    for t, i in [(0, 0), (1, 0), (7, 3), (49, 7)]:
        angle = t / 10000 ** (2 * i / 16)
        assert table[t, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert table[t, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_sinusoidal_model_has_no_position_weights_and_runs():
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=20, position_encoding="sinusoidal")
    model = BertModel(config).eval()
    assert not any("position" in k for k in model.state_dict())
    ids = torch.randint(0, 100, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.long)
    out = model.sentence_embedding(ids, mask)
    assert out.shape == (3, 32)
    assert torch.allclose(out.norm(dim=1), torch.ones(3))
    # the table is really added: shifting the same tokens by one position changes the token vectors
    hidden = model(ids[:, :1].repeat(1, 2), mask[:, :2])
    assert not torch.allclose(hidden[:, 0], hidden[:, 1])


def test_bad_pooling_lists_valid_modes():
    with pytest.raises(ValueError, match="valid modes: mean, cls"):
        BertConfig(pooling="max")
    with pytest.raises(ValueError, match="valid modes: mean, cls"):
        pool(torch.zeros(1, 2, 4), torch.ones(1, 2), "max")
    assert POOLING_MODES == ("mean", "cls")


def test_mean_pooling_ignores_padding_and_survives_an_empty_mask():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert pool(hidden, torch.tensor([[1, 1, 0]]), "mean").tolist() == [[2.0, 3.0]]
    assert pool(hidden, torch.tensor([[1, 1, 0]]), "cls").tolist() == [[1.0, 2.0]]
    assert pool(hidden, torch.tensor([[0, 0, 0]]), "mean").tolist() == [[0.0, 0.0]]  # clamp(min=1e-9), no NaN


def test_padding_does_not_change_real_tokens():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)
    model = BertModel(config).eval()
    ids = torch.randint(1, 50, (1, 5))
    alone = model.sentence_embedding(ids, torch.ones(1, 5, dtype=torch.long))
    padded_ids = torch.cat([ids, torch.full((1, 4), 7)], dim=1)
    padded = model.sentence_embedding(padded_ids, torch.tensor([[1] * 5 + [0] * 4]))
    assert torch.allclose(alone, padded, atol=1e-6)
