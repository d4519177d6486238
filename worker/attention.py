"""Swap BLIP's matmul-softmax attention for ``scaled_dot_product_attention`` on one model instance.

The math mirrors transformers 5.x ``BlipAttention`` (vision: fused qkv, no mask, scale
head_dim**-0.5) and ``BlipTextSelfAttention`` (text self-attention with the additive mask
built by ``BlipTextModel``; cross-attention, where the caller's encoder mask never reaches
the scores, so none is applied). Dropout is off in eval. Only instances are patched, so a
reference model built from the same class keeps the original attention.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.blip.modeling_blip import BlipAttention
from transformers.models.blip.modeling_blip_text import BlipTextSelfAttention


def _vision_forward(self: BlipAttention, hidden_states: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, None]:
    bsz, tgt_len, embed_dim = hidden_states.size()
    qkv = self.qkv(hidden_states).reshape(bsz, tgt_len, 3, self.num_heads, embed_dim // self.num_heads)
    query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    context = F.scaled_dot_product_attention(query, key, value, scale=self.scale)
    context = context.transpose(1, 2).reshape(bsz, tgt_len, embed_dim)
    return self.projection(context), None


def _text_forward(
    self: BlipTextSelfAttention,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    encoder_hidden_states: torch.Tensor | None = None,
    encoder_attention_mask: torch.Tensor | None = None,
    cache: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    if cache is not None:
        raise NotImplementedError("the SDPA attention patch does not support a KV cache (decoding)")
    is_cross = encoder_hidden_states is not None
    mask = encoder_attention_mask if is_cross else attention_mask
    current = encoder_hidden_states if encoder_hidden_states is not None else hidden_states
    head = self.attention_head_size
    query = self.query(hidden_states).view(*hidden_states.shape[:-1], -1, head).transpose(1, 2)
    key = self.key(current).view(*current.shape[:-1], -1, head).transpose(1, 2)
    value = self.value(current).view(*current.shape[:-1], -1, head).transpose(1, 2)
    if mask is not None:
        mask = mask.to(device=query.device, dtype=query.dtype)
    context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=head**-0.5)
    context = context.transpose(1, 2).reshape(*hidden_states.shape[:-1], self.all_head_size)
    return context, None


def enable_sdpa(model: nn.Module) -> int:
    """Patch every BLIP attention module of this model instance to use SDPA; return how many."""
    patched = 0
    for module in model.modules():
        if isinstance(module, BlipAttention):
            module.forward = types.MethodType(_vision_forward, module)  # type: ignore[method-assign]
        elif isinstance(module, BlipTextSelfAttention):
            module.forward = types.MethodType(_text_forward, module)
        else:
            continue
        patched += 1
    return patched
