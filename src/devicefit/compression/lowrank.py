"""Low-rank factorisation by truncated SVD (Denton et al., arXiv 1404.0736; Jaderberg et al., arXiv 1405.3866).

- ``Linear`` (out x in) -> ``Linear(in, r, bias=False)`` then ``Linear(r, out)``: W ~ B A with A = sqrt(S) V^T
  (r x in) and B = U sqrt(S) (out x r), the best rank-r approximation in Frobenius norm (Eckart-Young).
- ``Conv2d``, ``channel`` form: the kernel as its GEMM matrix (out x in*kh*kw) -> a kh x kw convolution with r
  outputs (same stride, padding, dilation) then a 1x1 convolution to ``out`` (with the bias).
- ``Conv2d``, ``spatial`` form (Jaderberg's scheme 2, solved by SVD as in Tai et al. 1511.06067): the kernel
  as the matrix (in*kh x out*kw) -> a kh x 1 convolution with r outputs then a 1 x kw convolution to ``out``.

The rank kept is ``max(1, round(rank_fraction * full_rank))``; at ``rank_fraction=1`` the factorisation is
exact up to float rounding. Grouped convolutions are not factorised (skipped and reported).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import InputError
from .policy import LowRank
from .registry import Skip, register_transform, replace_module


def svd_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, A)`` with ``B @ A`` the best rank-``rank`` approximation of the 2-D ``weight`` (B: m x r, A: r x n)."""
    if weight.ndim != 2:
        raise InputError(f"svd_factors needs a matrix, got shape {tuple(weight.shape)}")
    full = min(weight.shape)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= full:
        raise InputError(f"rank must be an integer in 1..{full} for a {tuple(weight.shape)} matrix, got {rank!r}")
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(weight.dtype), (root[:, None] * vh[:rank]).to(weight.dtype)


def kept_rank(full: int, fraction: float) -> int:
    return max(1, min(full, round(fraction * full)))


@register_transform(LowRank)
def factorize(root: nn.Module, name: str, module: nn.Module, action: LowRank) -> dict[str, Any]:
    if isinstance(module, nn.Linear):
        if action.form not in ("auto", "linear"):
            raise Skip(f"LowRank form {action.form!r} is for convolutions; Linear takes 'linear'")
        return _linear(root, name, module, action.rank_fraction)
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise Skip(f"grouped convolution (groups={module.groups}) is not factorised")
        if action.form == "linear":
            raise Skip("LowRank form 'linear' is for Linear layers; Conv2d takes 'channel' or 'spatial'")
        if action.form == "spatial":
            return _spatial(root, name, module, action.rank_fraction)
        return _channel(root, name, module, action.rank_fraction)
    raise Skip(f"{type(module).__name__} is not factorised (Linear and Conv2d are)")


def _linear(root: nn.Module, name: str, m: nn.Linear, fraction: float) -> dict[str, Any]:
    full = min(m.out_features, m.in_features)
    r = kept_rank(full, fraction)
    b, a = svd_factors(m.weight, r)
    first = nn.Linear(m.in_features, r, bias=False)
    second = nn.Linear(r, m.out_features, bias=m.bias is not None)
    with torch.no_grad():
        first.weight.copy_(a)
        second.weight.copy_(b)
        if m.bias is not None:
            second.bias.copy_(m.bias)
    replace_module(root, name, nn.Sequential(first, second))
    return {"form": "linear", "rank": r, "full_rank": full}


def _channel(root: nn.Module, name: str, m: nn.Conv2d, fraction: float) -> dict[str, Any]:
    out, cin, kh, kw = m.weight.shape
    full = min(out, cin * kh * kw)
    r = kept_rank(full, fraction)
    b, a = svd_factors(m.weight.reshape(out, -1), r)
    first = nn.Conv2d(cin, r, (kh, kw), stride=m.stride, padding=m.padding, dilation=m.dilation, bias=False,
                      padding_mode=m.padding_mode)
    second = nn.Conv2d(r, out, 1, bias=m.bias is not None)
    with torch.no_grad():
        first.weight.copy_(a.reshape(r, cin, kh, kw))
        second.weight.copy_(b.reshape(out, r, 1, 1))
        if m.bias is not None:
            second.bias.copy_(m.bias)
    replace_module(root, name, nn.Sequential(first, second))
    return {"form": "channel", "rank": r, "full_rank": full}


def _spatial(root: nn.Module, name: str, m: nn.Conv2d, fraction: float) -> dict[str, Any]:
    out, cin, kh, kw = m.weight.shape
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise Skip("the spatial form needs numeric zero padding")
    full = min(cin * kh, out * kw)
    r = kept_rank(full, fraction)
    matrix = m.weight.permute(1, 2, 0, 3).reshape(cin * kh, out * kw)  # [(i, y), (o, x)]
    v, h = svd_factors(matrix, r)  # v: (cin*kh, r), h: (r, out*kw)
    (sh, sw), (ph, pw), (dh, dw) = m.stride, m.padding, m.dilation
    first = nn.Conv2d(cin, r, (kh, 1), stride=(sh, 1), padding=(ph, 0), dilation=(dh, 1), bias=False)
    second = nn.Conv2d(r, out, (1, kw), stride=(1, sw), padding=(0, pw), dilation=(1, dw), bias=m.bias is not None)
    with torch.no_grad():
        first.weight.copy_(v.reshape(cin, kh, r).permute(2, 0, 1).unsqueeze(-1))
        second.weight.copy_(h.reshape(r, out, kw).permute(1, 0, 2).unsqueeze(2))
        if m.bias is not None:
            second.bias.copy_(m.bias)
    replace_module(root, name, nn.Sequential(first, second))
    return {"form": "spatial", "rank": r, "full_rank": full}
