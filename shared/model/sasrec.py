"""SASRec-family causal Transformer (torch).

Shared by the worker (training, export) and the server's torch-CUDA backend; it imports
torch, so only modules that need torch import it (never shared/__init__).

Item embeddings with learned position embeddings (or rotary positions in attention),
pre-LN blocks of causal multi-head self-attention and an FFN (GELU or SwiGLU), a final
LayerNorm, and the item embedding table shared for scoring. Histories are left-padded
with row 0 and positions are counted from the newest event, so padding a history to any
length does not change its output.

``forward`` takes and returns tensors only (no numpy, device moves or data-dependent
Python branches), which is what makes the ONNX and TensorRT exports work.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.model.bundle import ModelConfig
from shared.model.item_features import MAX_TOKENS

NEG_INF = -1e9


def attention_bias(history: Tensor, query_len: int) -> Tensor:
    """Additive attention bias for the last ``query_len`` positions.

    history: int64 [B, L]. Returns float32 [B, 1, Q, L]: 0 where query i may attend to
    key j (j <= i and j is not padding, or j == i), NEG_INF elsewhere.
    """
    length = history.shape[1]
    keys = torch.arange(length, device=history.device)  # [L]
    queries = keys[length - query_len :]  # [Q]
    causal = keys[None, :] <= queries[:, None]  # [Q, L]
    diagonal = keys[None, :] == queries[:, None]  # [Q, L]
    real = (history != 0)[:, None, :]  # [B, 1, L]
    allowed = causal[None] & (real | diagonal[None])  # [B, Q, L]
    zeros = torch.zeros((), dtype=torch.float32, device=history.device)
    bias = torch.where(allowed, zeros, torch.full_like(zeros, NEG_INF))
    return bias[:, None]  # [B, 1, Q, L]


Rotary = tuple[Tensor, Tensor]


class _ByteMaskDropout(torch.autograd.Function):
    """x * keep / (1 - p), with keep drawn 8 bytes per 64-bit random number."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, p: float) -> Tensor:
        threshold = round(p * 256)  # p in steps of 1/256
        count = x.numel()
        words = torch.empty((count + 7) // 8, dtype=torch.int64, device=x.device)
        noise = words.random_(-(2**63), None).view(torch.uint8)[:count].view(x.shape)
        keep = noise >= threshold  # bool: each byte uniform on 0..255
        scale = 256.0 / (256 - threshold)
        ctx.save_for_backward(keep)
        ctx.scale = scale  # type: ignore[attr-defined]
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        (keep,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad.mul(keep).mul_(ctx.scale), None  # type: ignore[attr-defined]


class Dropout(nn.Module):
    """Inverted dropout like ``nn.Dropout``, but cheaper to train on CPU.

    torch draws one random number per element for ``nn.Dropout`` on CPU, which made
    dropout masks a fifth of a training step on ML-1M. This draws one 64-bit number per
    8 elements and keeps an element when its byte is at least round(256 p), so the rate
    is p rounded to 1/256. It uses torch's default generator (``torch.manual_seed``
    makes it repeatable). On CUDA, and whenever it is not training, it is
    ``F.dropout`` (identity in eval mode, which is what the ONNX export traces).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return F.dropout(x, self.p, self.training)
        out: Tensor = _ByteMaskDropout.apply(x, self.p)  # type: ignore[no-untyped-call]
        return out

    def extra_repr(self) -> str:
        return f"p={self.p}"


def rotary_tables(length: int, head_dim: int, device: torch.device) -> Rotary:
    """cos and sin [L, head_dim] for RoPE, position 0 at the newest (last) column."""
    positions = ((length - 1) - torch.arange(length, device=device)).to(torch.float32)
    inverse = 1.0 / (
        10000.0 ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    )
    angles = positions[:, None] * inverse[None, :]  # [L, head_dim / 2]
    angles = torch.cat([angles, angles], dim=-1)  # [L, head_dim]
    return torch.cos(angles), torch.sin(angles)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [B, H, T, Dh] rotated by the angles of its T positions (cos, sin [T, Dh])."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


class SelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.d_model % config.n_heads:
            raise ValueError(
                f"d_model ({config.d_model}) must be divisible by n_heads ({config.n_heads})"
            )
        self.n_heads = config.n_heads
        self.head_dim = config.d_model // config.n_heads
        self.query = nn.Linear(config.d_model, config.d_model)
        self.key_value = nn.Linear(config.d_model, 2 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)
        rate = config.dropout if config.attention_dropout is None else config.attention_dropout
        self.dropout = Dropout(rate)

    def forward(
        self, queries: Tensor, keys: Tensor, bias: Tensor, rotary: Rotary | None = None
    ) -> Tensor:
        """queries [B, Q, D] (the last Q of the L keys), keys [B, L, D],
        bias [B, 1, Q, L] -> [B, Q, D]."""
        b, q_len, d = queries.shape
        k_len = keys.shape[1]
        q = self.query(queries).reshape(b, q_len, self.n_heads, self.head_dim).transpose(1, 2)
        kv = self.key_value(keys).reshape(b, k_len, 2, self.n_heads, self.head_dim)
        k = kv[:, :, 0].transpose(1, 2)  # [B, H, L, Dh]
        v = kv[:, :, 1].transpose(1, 2)  # [B, H, L, Dh]
        if rotary is not None:
            cos, sin = rotary
            q = apply_rotary(q, cos[k_len - q_len :], sin[k_len - q_len :])
            k = apply_rotary(k, cos, sin)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + bias  # [B, H, Q, L]
        weights = self.dropout(torch.softmax(scores, dim=-1))
        context = (weights @ v).transpose(1, 2).reshape(b, q_len, d)  # [B, Q, D]
        out: Tensor = self.out(context)
        return out


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        hidden = config.d_model * config.ffn_mult
        self.swiglu = config.activation == "swiglu"
        self.up = nn.Linear(config.d_model, 2 * hidden if self.swiglu else hidden)
        self.down = nn.Linear(hidden, config.d_model)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.up(x)
        if self.swiglu:
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        else:
            h = F.gelu(h)
        out: Tensor = self.down(self.dropout(h))
        return out


class Block(nn.Module):
    """Pre-LN Transformer block.

    With ``residual: gated`` each branch's output is multiplied element-wise by
    sigmoid(W LN(x) + b) before it joins the residual stream: the gated residual of
    LiGR (Borisyuk et al., "From Features to Transformers: Redefining Ranking for
    Scalable Impact", 2025), the layer design eSASRec (Tikhonovich et al., RecSys 2025)
    builds on. Each block can then pass an event's embedding through, or a branch's
    output, per dimension. On Amazon Games it tied the plain block at equal time
    (docs/experiments.md), so it stays an option.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.d_model)
        self.attn = SelfAttention(config)
        self.ffn_norm = nn.LayerNorm(config.d_model)
        self.ffn = FeedForward(config)
        self.dropout = Dropout(config.dropout)
        self.gates = (
            nn.ModuleList(nn.Linear(config.d_model, config.d_model) for _ in range(2))
            if config.residual == "gated"
            else None
        )

    def _gate(self, branch: int, normed: Tensor, out: Tensor) -> Tensor:
        if self.gates is None:
            return out
        return out * torch.sigmoid(self.gates[branch](normed))

    def forward(
        self,
        x: Tensor,
        bias: Tensor,
        query_len: int | None = None,
        rotary: Rotary | None = None,
    ) -> Tensor:
        """x [B, L, D] -> [B, Q, D]; Q = L, or only the last ``query_len`` positions."""
        normed = self.attn_norm(x)
        if query_len is None:
            residual, queries = x, normed
        else:
            residual, queries = x[:, -query_len:], normed[:, -query_len:]
        attended = self.attn(queries, normed, bias, rotary)
        h = residual + self.dropout(self._gate(0, queries, attended))
        ffn_in = self.ffn_norm(h)
        out: Tensor = h + self.dropout(self._gate(1, ffn_in, self.ffn(ffn_in)))
        return out


class SASRec(nn.Module):
    item_tokens: Tensor
    """Models with properties: row r holds item r's property tokens, 0-padded."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.item_embedding = nn.Embedding(config.num_items + 1, config.d_model, padding_idx=0)
        self.property_embedding: nn.Embedding | None = None
        if config.property_tokens:
            self.property_embedding = nn.Embedding(
                config.property_tokens, config.d_model, padding_idx=0
            )
            self.register_buffer(
                "item_tokens", torch.zeros(config.num_items + 1, MAX_TOKENS, dtype=torch.long)
            )
        self.position_embedding = (
            nn.Embedding(config.max_len, config.d_model) if config.positions == "learned" else None
        )
        self.embedding_dropout = Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_blocks))
        self.final_norm = nn.LayerNorm(config.d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.item_embedding.weight, std=self.config.d_model**-0.5)
        if self.property_embedding is not None:
            nn.init.normal_(self.property_embedding.weight, std=self.config.d_model**-0.5)
            with torch.no_grad():
                self.property_embedding.weight[0].zero_()
        if self.position_embedding is not None:
            nn.init.normal_(self.position_embedding.weight, std=0.02)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def embed(self, history: Tensor, extra_tokens: Tensor | None = None) -> Tensor:
        """history int64 [B, L] (L <= max_len, left-padded) -> [B, L, D]. With
        ``extra_tokens`` (int64 [E, T], models with properties), rows N+1..N+E of the
        history are items added after training, known by those tokens alone."""
        length = history.shape[1]
        positions = (length - 1) - torch.arange(length, device=history.device)  # newest = 0
        vectors = (
            self.item_vectors(history)
            if extra_tokens is None
            else self._vectors_with_extra(history, extra_tokens)
        )
        x = vectors * math.sqrt(self.config.d_model)
        if self.position_embedding is not None:
            x = x + self.position_embedding(positions)[None]
        x = self.embedding_dropout(x)
        out: Tensor = x * (history != 0).unsqueeze(-1).to(x.dtype)  # [B, L, D]
        return out

    def forward(self, history: Tensor) -> Tensor:
        """Hidden states at every position: history [B, L] -> [B, L, D] (training; pass
        them through ``query`` before scoring)."""
        bias = attention_bias(history, history.shape[1])
        rotary = self._rotary(history)
        x = self.embed(history)
        for block in self.blocks:
            x = block(x, bias, rotary=rotary)
        out: Tensor = self.final_norm(x)
        return out

    def _rotary(self, history: Tensor) -> Rotary | None:
        if self.config.positions != "rotary":
            return None
        head_dim = self.config.d_model // self.config.n_heads
        return rotary_tables(history.shape[1], head_dim, history.device)

    def encode_last(self, history: Tensor, extra_tokens: Tensor | None = None) -> Tensor:
        """The user state after the newest event: history [B, L] -> [B, D] (inference);
        ``extra_tokens`` as in ``embed``.

        The final block computes only the last position; earlier blocks need all of them.
        """
        full_bias = attention_bias(history, history.shape[1])
        rotary = self._rotary(history)
        x = self.embed(history, extra_tokens)
        for block in self.blocks[:-1]:
            x = block(x, full_bias, rotary=rotary)
        last_bias = full_bias[:, :, -1:, :]  # [B, 1, 1, L]
        x = self.blocks[-1](x, last_bias, query_len=1, rotary=rotary)  # [B, 1, D]
        return self.query(self.final_norm(x[:, 0]))

    def query(self, hidden: Tensor) -> Tensor:
        """Final hidden states [..., D] -> the user states that score items: themselves
        (dot), or scaled to unit length and divided by the temperature (cosine)."""
        if self.config.similarity == "dot":
            return hidden
        return F.normalize(hidden, dim=-1) / self.config.temperature

    def item_vectors(self, rows: Tensor) -> Tensor:
        """Item rows [...] -> [..., D]: the id embedding, plus the mean of the property
        tokens' embeddings where the model has properties. Training leaves out the id
        part of a random ``id_dropout`` share of the items that have properties."""
        ids: Tensor = self.item_embedding(rows)
        if self.property_embedding is None:
            return ids
        if self.training and self.config.id_dropout > 0.0:
            has_properties = self.item_tokens[:, 0][rows] != 0
            dropped = torch.rand(rows.shape, device=rows.device) < self.config.id_dropout
            ids = ids.masked_fill((dropped & has_properties)[..., None], 0.0)
        if self.training and rows.numel() > self.item_tokens.shape[0]:
            # A training batch names more rows than the catalogue has: each item's mean
            # once, then gathered. The same values, without building [..., T, D]: a
            # training step on ML-1M's histories of 200 took 9-13% less time.
            return ids + self.property_vectors(self.item_tokens)[rows]
        return ids + self.property_vectors(self.item_tokens[rows])

    def _vectors_with_extra(self, history: Tensor, extra_tokens: Tensor) -> Tensor:
        """item_vectors where rows above N are extra items: their tokens, no id part.
        Gathers only the history's rows (no table is copied per run)."""
        known = history <= self.config.num_items
        zero = torch.zeros_like(history)
        base = torch.where(known, history, zero)
        extra = torch.where(known, zero, history - (self.config.num_items + 1))
        tokens = torch.where(known[..., None], self.item_tokens[base], extra_tokens[extra])
        ids: Tensor = self.item_embedding(base)  # row 0 (zero) for an extra item
        return ids + self.property_vectors(tokens)

    def property_vectors(self, tokens: Tensor) -> Tensor:
        """Property tokens [..., T] (0 pads) -> the mean of their embeddings [..., D];
        zero for an item with none. Alone, the vector of an item the model has no id
        row for."""
        assert self.property_embedding is not None
        count = (tokens != 0).sum(-1, keepdim=True).clamp(min=1).to(torch.float32)
        out: Tensor = self.property_embedding(tokens).sum(-2) / count
        return out

    def output_table(self) -> Tensor:
        """[N+1, D] rows that states are scored against: the item vectors (dot), or the
        same scaled to unit length (cosine; the padding row stays 0)."""
        if self.property_embedding is None:
            weight = self.item_embedding.weight
        else:
            rows = torch.arange(self.config.num_items + 1, device=self.item_tokens.device)
            weight = self.item_vectors(rows)
        return weight if self.config.similarity == "dot" else F.normalize(weight, dim=-1)

    def score(self, state: Tensor) -> Tensor:
        """[..., D] -> [..., N+1] scores of every item row (row 0 is padding)."""
        return state @ self.output_table().T


class InferenceGraph(nn.Module):
    """What model.onnx computes: history [B, L] int64 -> (state [B, D], scores [B, N+1]).
    A model with properties also takes ``extra_tokens`` [E, T] int64: the tokens of the
    items added after training, history rows N+1..N+E (E >= 1; a row of zeros when there
    are none). Their scores are the server's: state @ their rows of its item table."""

    def __init__(self, model: SASRec) -> None:
        super().__init__()
        self.model = model

    def forward(self, history: Tensor, extra_tokens: Tensor | None = None) -> tuple[Tensor, Tensor]:
        state = self.model.encode_last(history, extra_tokens)
        return state, self.model.score(state)


class ItemEncoderGraph(nn.Module):
    """What item_encoder.onnx computes (models with properties): property tokens [B, T]
    int64 -> the scoring-table rows [B, D] of items the model has no id row for."""

    def __init__(self, model: SASRec) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> Tensor:
        vectors = self.model.property_vectors(tokens)
        if self.model.config.similarity == "dot":
            return vectors
        return F.normalize(vectors, dim=-1)
