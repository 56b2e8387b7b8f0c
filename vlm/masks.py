"""Attention masks for early fusion: PaliGemma's prefix-LM over [image | prompt] + causal answer, with padding."""

from __future__ import annotations

import torch


def prefix_lm_mask(valid: torch.Tensor, prefix_len: torch.Tensor) -> torch.Tensor:
    """Bool (B, 1, S, S), True = may attend.

    valid: (B, S) True for real tokens (False for padding); prefix_len: (B,) index where each row's answer starts
    (image + prompt, padding included). Prefix tokens see the whole prefix; answer tokens see the prefix and the
    answer up to themselves. Padding is never attended to; a padding row attends to itself only (no NaNs).
    """
    b, s = valid.shape
    idx = torch.arange(s, device=valid.device)
    causal = idx[None, :] <= idx[:, None]  # (S, S) key <= query
    in_prefix = idx[None, :] < prefix_len[:, None]  # (B, S) key in the prefix
    allowed = causal[None] | (in_prefix[:, None, :] & in_prefix[:, :, None])  # (B, S, S)
    allowed = allowed & valid[:, None, :]
    allowed = allowed | torch.eye(s, dtype=torch.bool, device=valid.device)[None]
    return allowed[:, None]


def positions_from_valid(valid: torch.Tensor) -> torch.Tensor:
    """(B, S) RoPE positions counting real tokens only, so left padding does not shift a sequence."""
    return (valid.long().cumsum(-1) - 1).clamp(min=0)
