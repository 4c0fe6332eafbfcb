"""Self-attention with plain `nn.Linear` projections, a drop-in for open_clip's `nn.MultiheadAttention`.

Why: peft adapts `nn.MultiheadAttention` as one unit (in_proj and out_proj together) and merges and unmerges
its delta into the base weights on every forward, which drifts the base weights by float rounding and makes a
resumed run differ from an uninterrupted one. With `in_proj` (q, k, v stacked, as in the MHA weight) and
`out_proj` as ordinary Linear layers, peft wraps them like any Linear, targets each alone (the paper adapts
the in-projection only) and never touches the base weights. A ResNet CLIP's attention pool gets the same
treatment (`LinearAttentionPool2d`), so LoRA on its q/k/v projections acts at all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LinearSelfAttention(nn.Module):
    """Multi-head attention called like `nn.MultiheadAttention(q, k, v, need_weights=False, attn_mask=...)`.

    Same parameters as the MHA it replaces (in_proj: [3 * d, d], out_proj: [d, d]), same outputs; attention
    weights are not returned (open_clip never asks for them).
    """

    def __init__(self, embed_dim: int, num_heads: int, batch_first: bool = True, dropout: float = 0.0):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.batch_first, self.dropout = batch_first, dropout
        self.in_proj = nn.Linear(embed_dim, 3 * embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> LinearSelfAttention:
        if not mha._qkv_same_embed_dim or mha.in_proj_bias is None or mha.bias_k is not None:
            raise ValueError("only self-attention MHA with packed in_proj and biases can be converted")
        new = cls(mha.embed_dim, mha.num_heads, mha.batch_first, mha.dropout)
        w = mha.in_proj_weight
        new.to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            new.in_proj.weight.copy_(w)
            new.in_proj.bias.copy_(mha.in_proj_bias)
            new.out_proj.weight.copy_(mha.out_proj.weight)
            new.out_proj.bias.copy_(mha.out_proj.bias)
        new.train(mha.training)
        return new

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:
        key = query if key is None else key
        value = key if value is None else value
        self_attention = query is key and key is value  # before the transposes make new tensors
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        d = self.embed_dim
        if self_attention:
            q, k, v = self.in_proj(query).split(d, dim=-1)
        else:  # cross-attention: the same projection, each part on its own input
            q = self.in_proj(query)[..., :d]
            k = self.in_proj(key)[..., d : 2 * d]
            v = self.in_proj(value)[..., 2 * d :]
        n, lq, _ = q.shape
        heads = self.num_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(n, t.shape[1], heads, d // heads).transpose(1, 2)

        mask = _additive_mask(attn_mask, key_padding_mask, q.dtype, n, heads, lq, k.shape[1])
        out = F.scaled_dot_product_attention(
            split(q), split(k), split(v), attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        out = self.out_proj(out.transpose(1, 2).reshape(n, lq, d))
        return (out if self.batch_first else out.transpose(0, 1)), None


def _additive_mask(attn_mask, key_padding_mask, dtype, n, heads, lq, lk) -> torch.Tensor | None:
    """MHA's masks (bool: True = blocked; float: added to the scores) as one float mask SDPA broadcasts."""

    def additive(m: torch.Tensor) -> torch.Tensor:
        if m.dtype == torch.bool:
            return torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill_(m, float("-inf"))
        return m.to(dtype)

    mask = None
    if attn_mask is not None:
        mask = additive(attn_mask)
        if mask.dim() == 3:  # [N * heads, Lq, Lk]
            mask = mask.view(n, heads, lq, lk)
    if key_padding_mask is not None:
        pad = additive(key_padding_mask).view(n, 1, 1, lk)
        mask = pad if mask is None else mask + pad
    return mask


class LinearAttentionPool2d(nn.Module):
    """open_clip's ResNet attention pool (`AttentionPool2d`) with q/k/v/c_proj called as modules.

    open_clip hands their weights to `F.multi_head_attention_forward`, so LoRA wrapped around them by peft
    would never run. Same parameters under the same names (the state dict is unchanged), same outputs; only
    the mean token queries, as only its output is kept. `project = False` returns the pooled output before
    `c_proj` (the ResNet's raw visual feature).
    """

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.positional_embedding = pool.positional_embedding
        self.q_proj, self.k_proj, self.v_proj, self.c_proj = pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj
        self.num_heads = pool.num_heads
        self.project = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)  # NCHW -> N(HW)C
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.positional_embedding.to(x.dtype)
        n, length, d = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(n, t.shape[1], self.num_heads, d // self.num_heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q_proj(x[:, :1])), heads(self.k_proj(x)), heads(self.v_proj(x)))
        out = out.transpose(1, 2).reshape(n, d)
        return self.c_proj(out) if self.project else out


def linearize_attention(module: nn.Module) -> int:
    """Replace every self-attention `nn.MultiheadAttention` and every ResNet attention pool under `module` in
    place; returns how many."""
    from open_clip.modified_resnet import AttentionPool2d

    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.MultiheadAttention) and child._qkv_same_embed_dim and child.bias_k is None:
                setattr(parent, name, LinearSelfAttention.from_mha(child))
                count += 1
            elif isinstance(child, AttentionPool2d):
                new = LinearAttentionPool2d(child)
                new.train(child.training)
                setattr(parent, name, new)
                count += 1
    return count


def open_clip_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict of a linearized model in open_clip's own layout (`attn.in_proj_weight`, ...)."""
    out = {}
    for key, value in state.items():
        key = key.replace("attn.in_proj.weight", "attn.in_proj_weight").replace(
            "attn.in_proj.bias", "attn.in_proj_bias"
        )
        out[key] = value
    return out
