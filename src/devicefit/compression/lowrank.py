"""Low-rank factorisation by truncated SVD (Denton et al., arXiv 1404.0736; Jaderberg et al., arXiv 1405.3866).

- ``Linear`` (out x in) -> ``Linear(in, r, bias=False)`` then ``Linear(r, out)``: W ~ B A with A = sqrt(S) V^T
  (r x in) and B = U sqrt(S) (out x r), the best rank-r approximation in Frobenius norm (Eckart-Young).
- ``Conv2d``, ``channel`` form: the kernel as its GEMM matrix (out x in*kh*kw) -> a kh x kw convolution with r
  outputs (same stride, padding, dilation) then a 1x1 convolution to ``out`` (with the bias).
- ``Conv2d``, ``spatial`` form (Jaderberg's scheme 2, solved by SVD as in Tai et al. 1511.06067): the kernel
  as the matrix (in*kh x out*kw) -> a kh x 1 convolution with r outputs then a 1 x kw convolution to ``out``.
- ``nn.LSTM``/``nn.GRU`` (ShrinkML, arXiv 1907.03540): each input matrix ``weight_ih_l{k}`` and recurrent
  matrix ``weight_hh_l{k}`` is factorised like a Linear. PyTorch's fused RNN kernels take only full matrices,
  so the layer becomes a :class:`LowRankRNN`: the same recurrence (gate order and equations of ``nn.LSTM`` /
  ``nn.GRU``) written with one ``nn.Linear`` (or factorised pair) per matrix, the input products of all steps
  in one matmul and a Python loop over the steps for the recurrent ones. It exports to ONNX (the loop
  unrolled over the example's steps, so a different sequence length needs a new export). On CPU it is slower
  than the fused kernel at the same size (a step loop in Python; see the report); what it buys is fewer
  weights and MACs. Naming one matrix (``"rnn.weight_hh_l0"``) factorises only that one.

The rank kept is ``max(1, round(rank_fraction * full_rank))``, ``full_rank`` the matrix's numerical rank
(:func:`matrix_rank`: a trained layer's ``min(shape)``; a layer multiplied back from a rank-r factorisation, as
iterative compression does between rounds, has rank r, so fractions compound over the rounds); at
``rank_fraction=1`` the factorisation is exact up to float rounding. Grouped convolutions, bidirectional RNNs
and LSTMs with projections are not factorised (skipped and reported). Inside :func:`svd_cache` (as a policy
space builds its candidates) each matrix is decomposed once, whatever ranks are asked of it.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from collections.abc import Iterator
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
    u, s, vh = _svd(weight.detach().double())
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(weight.dtype), (root[:, None] * vh[:rank]).to(weight.dtype)


#: The SVDs of the matrices seen inside :func:`svd_cache`, by content (None outside one).
_SVDS: contextvars.ContextVar[dict[tuple[Any, ...], tuple[torch.Tensor, ...]] | None] = contextvars.ContextVar(
    "devicefit svd cache", default=None)


@contextlib.contextmanager
def svd_cache(store: dict[tuple[Any, ...], tuple[torch.Tensor, ...]] | None = None) -> Iterator[None]:
    """Inside, each distinct matrix is decomposed once (into ``store`` if given, to keep it across calls; else
    into the cache already active, or a new one): a policy search builds one model per candidate, and every
    candidate truncates the same SVDs at other ranks."""
    active = _SVDS.get()
    token = _SVDS.set(store if store is not None else active if active is not None else {})
    try:
        yield
    finally:
        _SVDS.reset(token)


def _svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cache = _SVDS.get()
    if cache is None:
        return torch.linalg.svd(matrix, full_matrices=False)
    data = matrix.contiguous()
    key = (tuple(data.shape), hashlib.sha1(data.numpy().tobytes()).hexdigest())
    if key not in cache:
        cache[key] = torch.linalg.svd(data, full_matrices=False)
    u, s, vh = cache[key]
    return u, s, vh


def matrix_rank(weight: torch.Tensor) -> int:
    """The numerical rank of the 2-D ``weight``: singular values above ``max(shape) * eps(dtype) * largest``
    (``torch.linalg.matrix_rank``'s rule, at the weight's precision). A trained layer is full rank; a layer
    multiplied back from a rank-r factorisation (:func:`merge_factorized`) has rank r."""
    _, s, _ = _svd(weight.detach().double())
    if not len(s) or float(s[0]) == 0.0:
        return 0
    tol = float(s[0]) * max(weight.shape) * torch.finfo(weight.dtype).eps
    return int((s > tol).sum())


def kept_rank(full: int, fraction: float) -> int:
    return max(1, min(full, round(fraction * full)))


@register_transform(LowRank)
def factorize(root: nn.Module, name: str, module: nn.Module, action: LowRank) -> dict[str, Any]:
    with svd_cache():  # the rank and the factors come from one SVD
        return _factorize(root, name, module, action)


def _factorize(root: nn.Module, name: str, module: nn.Module, action: LowRank) -> dict[str, Any]:
    if isinstance(module, nn.Linear):
        if action.form not in ("auto", "linear"):
            raise Skip(f"LowRank form {action.form!r} is for convolutions; Linear takes 'linear'")
        return _linear(root, name, module, action.rank_fraction)
    if isinstance(module, (nn.LSTM, nn.GRU)):
        if action.form not in ("auto", "linear"):
            raise Skip(f"LowRank form {action.form!r} is for convolutions; LSTM/GRU matrices take 'linear'")
        return _rnn(root, name, module, action.rank_fraction)
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise Skip(f"grouped convolution (groups={module.groups}) is not factorised")
        if action.form == "linear":
            raise Skip("LowRank form 'linear' is for Linear layers; Conv2d takes 'channel' or 'spatial'")
        if action.form == "spatial":
            return _spatial(root, name, module, action.rank_fraction)
        return _channel(root, name, module, action.rank_fraction)
    raise Skip(f"{type(module).__name__} is not factorised (Linear, Conv2d and LSTM/GRU matrices are)")


class Factorized(nn.Sequential):
    """A layer factorised by :mod:`.lowrank`: the two layers ``(first, second)`` in sequence, and the ``form``
    (``linear``, ``channel``, ``spatial``) that :meth:`dense` multiplies back into one layer of the original
    geometry. Its state dict is a plain ``nn.Sequential``'s (``0.weight``, ``1.weight``, ``1.bias``)."""

    def __init__(self, first: nn.Module, second: nn.Module, form: str) -> None:
        super().__init__(first, second)
        self.form = form

    def dense(self) -> nn.Module:
        """The one layer computing the same function (its weight of rank at most the factorisation's)."""
        first, second = self[0], self[1]
        with torch.no_grad():
            if self.form == "linear":
                out: nn.Module = nn.Linear(first.in_features, second.out_features, bias=second.bias is not None)
                out.weight.copy_(second.weight @ first.weight)
            elif self.form == "channel":
                out = nn.Conv2d(first.in_channels, second.out_channels, first.kernel_size, stride=first.stride,
                                padding=first.padding, dilation=first.dilation, bias=second.bias is not None,
                                padding_mode=first.padding_mode)
                out.weight.copy_(torch.einsum("or,rikl->oikl", second.weight[:, :, 0, 0], first.weight))
            else:  # spatial: a kh x 1 then a 1 x kw convolution, one along each axis
                out = nn.Conv2d(first.in_channels, second.out_channels, (first.kernel_size[0], second.kernel_size[1]),
                                stride=(first.stride[0], second.stride[1]),
                                padding=(first.padding[0], second.padding[1]),
                                dilation=(first.dilation[0], second.dilation[1]), bias=second.bias is not None)
                out.weight.copy_(torch.einsum("orx,riy->oiyx", second.weight[:, :, 0, :], first.weight[:, :, :, 0]))
            if second.bias is not None:
                out.bias.copy_(second.bias)
        return out


def merge_factorized(model: nn.Module) -> nn.Module:
    """``model`` (changed in place) with every :class:`Factorized` pair multiplied back into one layer, and every
    :class:`LowRankRNN` whose matrices are then all full back to ``nn.LSTM``/``nn.GRU``: the weights a round of
    iterative compression fine-tuned, in the original architecture, so that the next round truncates each layer
    afresh (a rank-r layer truncated at rank r is itself) instead of factorising the factors."""
    for name, m in list(model.named_modules()):
        if isinstance(m, Factorized):
            replace_module(model, name, m.dense())
    for name, m in list(model.named_modules()):
        if isinstance(m, LowRankRNN) and all(isinstance(c, nn.Linear) for c in m.children()):
            replace_module(model, name, m.to_rnn())
    return model


def _linear(root: nn.Module, name: str, m: nn.Linear, fraction: float) -> dict[str, Any]:
    full = matrix_rank(m.weight)
    r = kept_rank(full, fraction)
    b, a = svd_factors(m.weight, r)
    first = nn.Linear(m.in_features, r, bias=False)
    second = nn.Linear(r, m.out_features, bias=m.bias is not None)
    with torch.no_grad():
        first.weight.copy_(a)
        second.weight.copy_(b)
        if m.bias is not None:
            second.bias.copy_(m.bias)
    replace_module(root, name, Factorized(first, second, "linear"))
    return {"form": "linear", "rank": r, "full_rank": full}


def _channel(root: nn.Module, name: str, m: nn.Conv2d, fraction: float) -> dict[str, Any]:
    out, cin, kh, kw = m.weight.shape
    full = matrix_rank(m.weight.reshape(out, -1))
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
    replace_module(root, name, Factorized(first, second, "channel"))
    return {"form": "channel", "rank": r, "full_rank": full}


def _spatial(root: nn.Module, name: str, m: nn.Conv2d, fraction: float) -> dict[str, Any]:
    out, cin, kh, kw = m.weight.shape
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise Skip("the spatial form needs numeric zero padding")
    matrix = m.weight.permute(1, 2, 0, 3).reshape(cin * kh, out * kw)  # [(i, y), (o, x)]
    full = matrix_rank(matrix)
    r = kept_rank(full, fraction)
    v, h = svd_factors(matrix, r)  # v: (cin*kh, r), h: (r, out*kw)
    (sh, sw), (ph, pw), (dh, dw) = m.stride, m.padding, m.dilation
    first = nn.Conv2d(cin, r, (kh, 1), stride=(sh, 1), padding=(ph, 0), dilation=(dh, 1), bias=False)
    second = nn.Conv2d(r, out, (1, kw), stride=(1, sw), padding=(0, pw), dilation=(1, dw), bias=m.bias is not None)
    with torch.no_grad():
        first.weight.copy_(v.reshape(cin, kh, r).permute(2, 0, 1).unsqueeze(-1))
        second.weight.copy_(h.reshape(r, out, kw).permute(1, 0, 2).unsqueeze(2))
        if m.bias is not None:
            second.bias.copy_(m.bias)
    replace_module(root, name, Factorized(first, second, "spatial"))
    return {"form": "spatial", "rank": r, "full_rank": full}


class LowRankRNN(nn.Module):
    """An ``nn.LSTM`` or ``nn.GRU`` (unidirectional, no projection) whose matrices are modules: ``weight_ih_l{k}``
    and ``weight_hh_l{k}`` are each an ``nn.Linear`` (with the matching bias) or a factorised pair. Same call
    and outputs as the original: ``(output, (h_n, c_n))`` for an LSTM, ``(output, h_n)`` for a GRU."""

    #: Marks a recurrent layer for the layer analysis (which channel-prunes no recurrent layer).
    recurrent = True

    def __init__(self, rnn: nn.LSTM | nn.GRU) -> None:
        super().__init__()
        self.cell = "lstm" if isinstance(rnn, nn.LSTM) else "gru"
        self.input_size, self.hidden_size, self.num_layers = rnn.input_size, rnn.hidden_size, rnn.num_layers
        self.batch_first = rnn.batch_first
        self.dropout = float(rnn.dropout)
        gates = 4 if self.cell == "lstm" else 3
        for k in range(self.num_layers):
            for kind in ("ih", "hh"):
                w = rnn.get_parameter(f"weight_{kind}_l{k}")
                b = getattr(rnn, f"bias_{kind}_l{k}", None) if rnn.bias else None
                lin = nn.Linear(w.shape[1], gates * self.hidden_size, bias=b is not None)
                with torch.no_grad():
                    lin.weight.copy_(w)
                    if b is not None:
                        lin.bias.copy_(b)
                self.add_module(f"weight_{kind}_l{k}", lin)

    def to_rnn(self) -> nn.LSTM | nn.GRU:
        """The ``nn.LSTM``/``nn.GRU`` with these matrices (all of them full ``nn.Linear``; see
        :func:`merge_factorized`): the fused kernels again."""
        mats = {n: c for n, c in self.named_children()}
        if not all(isinstance(c, nn.Linear) for c in mats.values()):
            raise InputError("to_rnn needs every matrix full (merge the factorised ones first)")
        bias = all(c.bias is not None for c in mats.values())
        kind = nn.LSTM if self.cell == "lstm" else nn.GRU
        rnn = kind(self.input_size, self.hidden_size, num_layers=self.num_layers, bias=bias,
                   batch_first=self.batch_first, dropout=self.dropout)
        with torch.no_grad():
            for n, c in mats.items():
                rnn.get_parameter(n).copy_(c.weight)
                if bias:
                    rnn.get_parameter(n.replace("weight", "bias", 1)).copy_(c.bias)
        return rnn

    def forward(self, x: torch.Tensor, hx: Any = None) -> tuple[torch.Tensor, Any]:
        batched = x.dim() == 3
        if not batched:
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)  # (T, N, I)
        steps, n = x.shape[0], x.shape[1]
        zeros = x.new_zeros(self.num_layers, n, self.hidden_size)
        if hx is None:
            h0, c0 = zeros, zeros
        elif self.cell == "lstm":
            h0, c0 = hx if batched else (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        else:
            h0, c0 = (hx if batched else hx.unsqueeze(1)), zeros
        hs, cs = [], []
        for k in range(self.num_layers):
            ih = self.get_submodule(f"weight_ih_l{k}")(x)  # all steps at once: (T, N, G*H)
            hh = self.get_submodule(f"weight_hh_l{k}")
            h, c = h0[k], c0[k]
            outs = []
            for t in range(steps):
                if self.cell == "lstm":
                    i, f, g, o = (ih[t] + hh(h)).chunk(4, -1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                else:
                    ri, zi, ni = ih[t].chunk(3, -1)
                    rh, zh, nh = hh(h).chunk(3, -1)
                    r, z = torch.sigmoid(ri + rh), torch.sigmoid(zi + zh)
                    h = (1 - z) * torch.tanh(ni + r * nh) + z * h
                outs.append(h)
            x = torch.stack(outs)
            if self.dropout and self.training and k < self.num_layers - 1:
                x = nn.functional.dropout(x, self.dropout)
            hs.append(h)
            cs.append(c)
        h_n = torch.stack(hs)
        out = x.transpose(0, 1) if self.batch_first and batched else x
        if not batched:
            out, h_n, c_n = out.squeeze(1), h_n.squeeze(1), torch.stack(cs).squeeze(1)
        else:
            c_n = torch.stack(cs)
        return out, ((h_n, c_n) if self.cell == "lstm" else h_n)


def _rnn(root: nn.Module, name: str, m: nn.LSTM | nn.GRU, fraction: float) -> dict[str, Any]:
    """Factorise every matrix of ``m`` (``name`` the module) or the one matrix ``name`` names."""
    if m.bidirectional or getattr(m, "proj_size", 0):
        raise Skip("bidirectional RNNs and LSTMs with projections are not factorised")
    parent, _, last = name.rpartition(".")
    if parent and last.startswith(("weight_ih_l", "weight_hh_l")) and root.get_submodule(parent) is m:
        module_name, matrices = parent, [last]  # one matrix of m
    else:
        module_name, matrices = name, [f"weight_{kind}_l{k}" for k in range(m.num_layers) for kind in ("ih", "hh")]
    replace_module(root, module_name, LowRankRNN(m))
    ranks = {}
    for mat in matrices:
        full_name = f"{module_name}.{mat}"
        ranks[mat] = _linear(root, full_name, root.get_submodule(full_name), fraction)
    return {"form": "linear", "rnn": type(m).__name__, "matrices": ranks}
