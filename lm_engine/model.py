"""
A BERT-family encoder written from the equations, for sentence embeddings.

    h0 = LayerNorm(E_token[x] + E_position[t] + E_type[0])
    per block:  a = LayerNorm(h + W_o · softmax(Q K^T / sqrt(d_k) + mask) V)
                h = LayerNorm(a + W_2 · GELU(W_1 a))
    sentence = pool(h_L over real tokens), then L2-normalised if the checkpoint asks for it

Submodule names equal the checkpoint's tensor names (embeddings.word_embeddings,
encoder.layer.{i}.attention.self.query, ...) so loading is a checked one-to-one copy (see checkpoint.py).
Dropout (BERT's places: embeddings, attention probabilities, both residual branches) acts only in train() mode,
which fine-tuning (train.py) uses; in eval() mode, as loaded, it is the identity.
"""

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

POOLING_MODES = ("mean", "cls")
POSITION_ENCODINGS = ("learned", "sinusoidal")
ACTIVATIONS = {
    "gelu": F.gelu,  # exact erf GELU, what BERT was trained with
    "gelu_new": partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
}


@dataclass
class BertConfig:
    vocab_size: int = 30522  # WordPiece vocabulary of bert-base-uncased, which MiniLM reuses
    hidden_size: int = 384  # C: width of every token vector
    num_hidden_layers: int = 6  # N blocks; MiniLM-L6 distils 12 BERT layers into 6
    num_attention_heads: int = 12  # nh; head size hs = C / nh = 32
    intermediate_size: int = 1536  # feed-forward width, the usual 4 * C
    hidden_act: str = "gelu"  # one of ACTIVATIONS; checkpoints name theirs in config.json
    max_position_embeddings: int = 512  # longest sequence the position table covers
    type_vocab_size: int = 2  # segment A/B embeddings; single sentences always use type 0
    layer_norm_eps: float = 1e-12  # BERT's epsilon (not PyTorch's 1e-5 default): must match training
    position_encoding: str = "learned"  # "learned" table from the checkpoint, or fixed "sinusoidal" for new models
    pooling: str = "mean"  # one of POOLING_MODES, from the checkpoint's 1_Pooling/config.json
    normalize: bool = True  # L2-normalise sentence vectors, when modules.json lists a Normalize module
    hidden_dropout_prob: float = 0.1  # dropout on embeddings and residual branches while fine-tuning (BERT's 0.1)
    attention_probs_dropout_prob: float = 0.1  # dropout on attention probabilities while fine-tuning

    def __post_init__(self):
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling {self.pooling!r} is not supported; valid modes: {', '.join(POOLING_MODES)}")
        if self.position_encoding not in POSITION_ENCODINGS:
            raise ValueError(
                f"position_encoding {self.position_encoding!r} is not supported; "
                f"valid: {', '.join(POSITION_ENCODINGS)}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; valid: {', '.join(ACTIVATIONS)}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")


def sinusoidal_table(n_positions, dim):
    """PE[t, 2i] = sin(t / 10000^(2i/dim)), PE[t, 2i+1] = cos(t / 10000^(2i/dim)) (Vaswani et al. 2017)."""
    position = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)  # (T, 1)
    inv_freq = torch.pow(10000.0, -torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
    table = torch.zeros(n_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq[: dim // 2])
    return table.float()


class Embeddings(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        if config.position_encoding == "learned":
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        else:
            # fixed, so not part of the state dict: a checkpoint never has to carry it
            table = sinusoidal_table(config.max_position_embeddings, config.hidden_size)
            self.register_buffer("position_table", table, persistent=False)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids):
        T = input_ids.size(1)
        positions = torch.arange(T, device=input_ids.device)
        if hasattr(self, "position_embeddings"):
            pos = self.position_embeddings(positions)  # (T, C)
        else:
            pos = self.position_table[:T].to(self.word_embeddings.weight.dtype)  # (T, C)
        token_type = self.token_type_embeddings.weight[0]  # (C,) single sentences are all segment A
        x = self.word_embeddings(input_ids) + pos + token_type  # (B, T, C)
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.n_head = config.num_attention_heads
        self.dropout_p = config.attention_probs_dropout_prob
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x, attn_mask):
        B, T, C = x.size()
        hs = C // self.n_head
        q = self.query(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.value(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        # softmax(q k^T / sqrt(hs)) v, with padded keys masked out; attn_mask is (B, 1, 1, T), True = attend
        dropout_p = self.dropout_p if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)  # (B, nh, T, hs)
        return y.transpose(1, 2).reshape(B, T, C)  # (B, T, C) heads side by side again


class Output(nn.Module):
    """Projection back to C, residual connection, LayerNorm: closes both the attention and the feed-forward."""

    def __init__(self, in_features, config):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, h, residual):
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class Attention(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = Output(config.hidden_size, config)

    def forward(self, x, attn_mask):
        return self.output(self.self(x, attn_mask), x)


class Intermediate(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        return self.act(self.dense(x))  # (B, T, 4C)


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = Output(config.intermediate_size, config)

    def forward(self, x, attn_mask):
        a = self.attention(x, attn_mask)
        return self.output(self.intermediate(a), a)


class Encoder(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList([Block(config) for _ in range(config.num_hidden_layers)])

    def forward(self, x, attn_mask):
        for block in self.layer:
            x = block(x, attn_mask)
        return x


def pool(hidden, attention_mask, mode):
    """Sentence vectors (B, C) from token vectors (B, T, C); attention_mask is (B, T), 1 for real tokens."""
    if mode == "cls":
        return hidden[:, 0]
    if mode == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    raise ValueError(f"pooling {mode!r} is not supported; valid modes: {', '.join(POOLING_MODES)}")


class BertModel(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)

    def forward(self, input_ids, attention_mask):
        """Token vectors (B, T, C) of the last block; input_ids and attention_mask are (B, T)."""
        attn_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T) broadcast over heads and queries
        return self.encoder(self.embeddings(input_ids), attn_mask)

    def sentence_embedding(self, input_ids, attention_mask):
        """Pooled (and normalised, if configured) sentence vectors (B, C), always in float32."""
        hidden = self(input_ids, attention_mask).float()  # pooling in fp32 even when the blocks ran in bf16
        sentence = pool(hidden, attention_mask, self.config.pooling)
        if self.config.normalize:
            sentence = F.normalize(sentence, p=2, dim=-1)
        return sentence
