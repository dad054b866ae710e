"""grad_norm, snip, grasp, fisher, jacob_cov and NASWOT from ONE forward pass of one minibatch.

References: "Zero-Cost Proxies for Lightweight NAS" (Abdelfattah et al., ICLR 2021, arXiv 2101.08134),
code SamsungLabs/zero-cost-nas (``foresight/pruners/measures``); NASWOT "Neural Architecture Search
without Training" (Mellor et al., ICML 2021, arXiv 2006.04647), code BayesWatch/nas-without-training.

The reference computes each measure on its own copy of the network, in train mode (BatchNorm uses the
batch statistics), with the same minibatch and cross-entropy loss (mean over the batch). Those copies
run the same forward, so here one forward serves all of them and the backward passes share its graph:

1. ``dy/dx`` of ``sum(y)`` (jacob_cov; also marks the ReLUs the backward reaches, as NASWOT does);
2. ``dL/dW`` for the Conv/Linear weights and ``dL/da`` for their outputs ``a`` (grad_norm, snip, fisher),
   kept differentiable when grasp is asked for;
3. ``H g = d(g . stopgrad(g))/dW`` (grasp's Hessian-vector product, the costly part).

Definitions (sums over all scored Conv/Linear weights, see :mod:`.layers`):

- grad_norm = sum over layers of ||dL/dW||_2 (a per-layer norm, summed: the reference's definition);
- snip = sum |W * dL/dW| (the reference takes |dL/dmask| at mask = 1, the same number);
- grasp = sum -W * (H g) with g = dL/dW (the reference's sign: higher is better), T = 1, one iteration;
- fisher = sum over layers and output channels k of 0.5 * mean_n(sum_hw a_nk * dL/da_nk)^2, each
  channel's value counted once per weight of that channel (the reference broadcasts it to the channel's
  weights before summing); ``a`` is the layer output (bias included);
- jacob_cov = -sum_i log(v_i + k) + 1/(v_i + k), v the eigenvalues of the correlation matrix of the
  per-image input gradients, k = 1e-5 (the reference's ``eval_score``);
- nwot = log|det K|, K = sum over ReLUs of c c^T + (1-c)(1-c)^T with c the binary code (output > 0) of
  each image (NASWOT's ``hooklogdet``), counting only ReLUs that the backward pass visits, as its hooks do.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .layers import is_relu, scored_layers, scoring_state
from .result import ProxyResult

GRADIENT_PROXIES = ("grad_norm", "snip", "grasp", "fisher", "jacob_cov", "nwot")
JACOB_COV_K = 1e-5


def jacob_cov_score(jacobian: np.ndarray, k: float = JACOB_COV_K) -> float:
    """The reference's ``eval_score``: ``jacobian`` is (N, D), one flattened input gradient per image."""
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant row gives NaN, reported below
        corrs = np.corrcoef(np.asarray(jacobian, dtype=np.float64))
    if not np.isfinite(corrs).all():
        raise FloatingPointError("the correlation matrix of the input gradients is not finite (constant gradient)")
    v = np.linalg.eigvalsh(corrs)  # symmetric: same eigenvalues as the reference's np.linalg.eig, always real
    return float(-np.sum(np.log(v + k) + 1.0 / (v + k)))


def hamming_kernel(codes: torch.Tensor) -> torch.Tensor:
    """NASWOT's K for one layer: ``codes`` (N, D) of 0/1 -> (N, N) float64 count of units where two images agree.

    ``c c^T + (1-c)(1-c)^T`` computed with one product: ``2 c c^T - s_i - s_j + D`` (s the row sums); in
    float32 while every count fits its 24-bit mantissa exactly, else in float64.
    """
    d = codes.shape[1]
    c = codes.to(torch.float32 if d < 2**24 else torch.float64)
    s = c.sum(1, dtype=torch.float64)
    return 2.0 * (c @ c.T).to(torch.float64) - s[:, None] - s[None, :] + float(d)


def gradient_pass(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    names: tuple[str, ...] | list[str] = GRADIENT_PROXIES,
) -> dict[str, ProxyResult]:
    """Compute the requested gradient-based proxies of ``model`` on one minibatch (train mode, CE loss).

    The model's mode, ``requires_grad`` flags and buffers are restored afterwards; ``.grad`` is untouched.
    """
    want = set(names) & set(GRADIENT_PROXIES)
    if not want:
        return {}
    if inputs.shape[0] < 2:
        raise InputError(f"gradient proxies need a minibatch of at least 2 inputs, got shape {tuple(inputs.shape)}")
    need_ce = bool(want & {"grad_norm", "snip", "grasp", "fisher"})
    need_jacob = bool(want & {"jacob_cov", "nwot"})
    results: dict[str, ProxyResult] = {}
    layers = scored_layers(model)
    if need_ce and not layers:
        for n in want & {"grad_norm", "snip", "grasp", "fisher"}:
            results[n] = ProxyResult.failed(n, "the model has no Conv or Linear layer to score")
        need_ce = False

    acts: list[tuple[nn.Module, torch.Tensor]] = []  # (layer, output) for fisher
    relu_kernels: list[tuple[torch.Tensor, list[bool]]] = []  # (K of one ReLU call, [visited by backward])
    hooks = []

    def keep_output(module: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        acts.append((module, out))

    def count_relu(_module: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            return
        visited = [False]

        def mark(grad: torch.Tensor) -> None:
            visited[0] = True

        out.register_hook(mark)
        relu_kernels.append((hamming_kernel((out.detach() > 0).flatten(1)), visited))

    with scoring_state(model, train=True):
        try:
            if need_ce and "fisher" in want:
                hooks += [m.register_forward_hook(keep_output) for m in layers]
            if "nwot" in want:
                hooks += [m.register_forward_hook(count_relu) for m in model.modules() if is_relu(m)]
            x = inputs.detach().clone().requires_grad_(need_jacob)
            out = model(x)
        finally:
            for h in hooks:
                h.remove()
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            raise InputError(f"the model must return logits of shape (N, classes), got {type(out).__name__} "
                             f"{tuple(out.shape) if isinstance(out, torch.Tensor) else ''}")

        # 1. input Jacobian (jacob_cov) and the ReLUs it visits (nwot).
        if need_jacob:
            try:
                (jac,) = torch.autograd.grad(out.sum(), x, retain_graph=need_ce, allow_unused=True)
                if jac is None:
                    raise FloatingPointError("the output does not depend on the input")
                if "jacob_cov" in want:
                    results["jacob_cov"] = ProxyResult.of("jacob_cov", jacob_cov_score(jac.flatten(1).numpy()))
            except (FloatingPointError, np.linalg.LinAlgError, RuntimeError) as exc:
                if "jacob_cov" in want:
                    results["jacob_cov"] = ProxyResult.failed("jacob_cov", f"jacob_cov failed: {exc}")
            if "nwot" in want:
                results["nwot"] = _nwot(relu_kernels, inputs.shape[0])

        # 2. dL/dW (and dL/da) with CE, 3. Hessian-vector product for grasp.
        if need_ce:
            results.update(_ce_proxies(out, targets, layers, acts, want))
    return {n: results[n] for n in names if n in results}


def _nwot(relu_kernels: list[tuple[torch.Tensor, list[bool]]], n: int) -> ProxyResult:
    kernels = [k for k, visited in relu_kernels if visited[0]]
    if not kernels:
        return ProxyResult.failed("nwot", "nwot failed: no ReLU module is on the path from input to output")
    K = torch.stack(kernels).sum(0).numpy()
    sign, logdet = np.linalg.slogdet(K)
    if sign == 0:
        return ProxyResult.failed("nwot", f"nwot failed: the {n}x{n} kernel of ReLU codes is singular")
    return ProxyResult.of("nwot", logdet)


def _ce_proxies(
    out: torch.Tensor,
    targets: torch.Tensor,
    layers: list[nn.Module],
    acts: list[tuple[nn.Module, torch.Tensor]],
    want: set[str],
) -> dict[str, ProxyResult]:
    res: dict[str, ProxyResult] = {}
    grasp = "grasp" in want
    weights = [m.weight for m in layers]
    act_tensors = [a for _, a in acts]
    loss = F.cross_entropy(out, targets)
    grads = torch.autograd.grad(loss, weights + act_tensors, create_graph=grasp, allow_unused=True)
    g, ga = grads[: len(weights)], grads[len(weights) :]
    with torch.no_grad():
        if "grad_norm" in want:
            res["grad_norm"] = ProxyResult.of("grad_norm", sum(float(gi.norm()) for gi in g if gi is not None))
        if "snip" in want:
            res["snip"] = ProxyResult.of(
                "snip", sum(float((gi * w).abs().sum()) for gi, w in zip(g, weights) if gi is not None)
            )
        if "fisher" in want:
            total = 0.0
            for (layer, a), da in zip(acts, ga):
                if da is None:
                    continue
                g_nk = (a.detach() * da.detach()).flatten(2).sum(2) if a.dim() > 2 else a.detach() * da.detach()
                per_channel = g_nk.pow(2).mean(0).mul(0.5)
                total += float(per_channel.sum()) * (layer.weight[0].numel())
            res["fisher"] = ProxyResult.of("fisher", total)
    if grasp:
        try:
            pairs = [(gi, w) for gi, w in zip(g, weights) if gi is not None and gi.requires_grad]
            if not pairs:
                raise RuntimeError("no weight gradient depends on the weights")
            z = sum((gi.detach() * gi).sum() for gi, _ in pairs)
            hg = torch.autograd.grad(z, [w for _, w in pairs], allow_unused=True)
            with torch.no_grad():
                score = sum(float((-w * h).sum()) for (_, w), h in zip(pairs, hg) if h is not None)
            res["grasp"] = ProxyResult.of("grasp", score)
        except RuntimeError as exc:
            res["grasp"] = ProxyResult.failed("grasp", f"grasp failed: {exc}")
    return res
