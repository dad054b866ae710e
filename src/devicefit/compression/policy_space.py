"""The per-layer policy space of one trained model: what AutoML compression searches (ShrinkML, AMC, AIMET).

A candidate is one kept ratio per **decision**, each from the space's ``ratios``: per compressible layer for
``lowrank`` (rank fraction; ShrinkML, arXiv 1907.03540), ``unstructured`` (1 - sparsity) and ``bits`` (the
weights' bit width / 32, 2..8 bits: mixed precision, HAQ arXiv 1811.08886; :class:`~.policy.WeightBits`), per
coupled
channel group for ``channel`` (channels kept; AMC, He et al. 2018: the layers whose output channels are
added together are one decision, so every policy is prunable). Ratio 1.0 leaves the layer as it is.
:meth:`PolicySpace.policy` turns a candidate into the :class:`~devicefit.compression.Policy` that
:func:`~devicefit.compression.apply_policy` applies, and :meth:`PolicySpace.build` applies it to a copy of the
model (the pretrained weights, compressed; not fresh weights as a NAS space builds).

It implements the search spaces' protocol (:class:`~devicefit.spaces.base.MutableSpace`: a neighbour moves one
decision one ratio step; :class:`~devicefit.spaces.base.CategoricalSpace`: one option per decision), so the
search issue's strategies (random, aging evolution, REINFORCE, Optuna) run on it unchanged, and the store keys
its evaluations by :meth:`PolicySpace.settings`, which include a hash of the model's weights.

**Exact cost without building the model** (:meth:`PolicySpace.cost`): MACs, parameters, non-zero parameters and
weight bytes of one sample, equal to what :func:`~devicefit.compression.compressed_cost` counts on the
compressed model:

- ``lowrank``, ``unstructured``, ``bits``: a layer's transform changes that layer only, so the cost is the
  original's plus, per layer, the change its ratio makes; the changes are measured once per layer and ratio (one
  uniformly compressed copy per ratio, split per layer by :func:`~devicefit.compression.analysis.layer_costs`;
  for ``bits`` only the bytes change: the layer's weights at ``bits`` bits, as ``compressed_cost`` counts them);
- ``channel``: a layer's cost is bilinear in the channels kept by the group of its inputs and the group of its
  outputs (ECC's bilinear form, arXiv 1812.01803, exact here for counts): a Conv2d costs ``H_out W_out k_h k_w
  c_in c_out / groups`` MACs and ``k_h k_w c_in c_out / groups (+ c_out)`` parameters, a Linear ``c_in c_out``
  (+ ``c_out``), a BatchNorm ``2 c``; every other parameter and MAC is unchanged. The groups are Torch-Pruning's
  (:func:`~devicefit.compression.analysis.dependency_graph`), the kept counts
  :func:`~devicefit.compression.channel.kept_channels`'.

**Within a budget** (:meth:`PolicySpace.within`): a view of the space whose sampled and option-built candidates
are repaired to ``metric <= limit`` (exact metrics only), as AMC bounds its agent's actions so that every policy
meets the budget: a candidate over it steps every decision down by the same number of ratio steps (the fewest
that fit), then raises decisions back one step at a time, in order and round after round, while the budget holds
(none above its sampled ratio). Random policies, an
agent's or a sampler's, then meet a tight budget (ResNet-56 at 0.2 of its parameters: none of 201 random
low-rank policies did); what a strategy learns is the accuracy of the repaired candidate, a fixed function of
its choices. Neighbours are not repaired (a local move over the budget is refused by the study's constraint).
The view keys evaluations as the space does (a policy's accuracy does not depend on the budget); the study's
constraint, which it claims in its store, is the budget.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..spaces.base import CategoricalSpace, MutableSpace
from .policy import Action, ChannelPrune, LowRank, Policy, Unstructured, WeightBits

#: The methods whose per-layer settings this space searches.
POLICY_METHODS = ("lowrank", "channel", "unstructured", "bits")
#: Default kept ratios per decision (1.0: the layer as it is). ``bits``: the weight's bit width / 32.
DEFAULT_RATIOS: dict[str, tuple[float, ...]] = {
    "lowrank": (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0),
    "channel": (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0),
    "unstructured": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    "bits": (2 / 32, 3 / 32, 4 / 32, 5 / 32, 6 / 32, 8 / 32, 1.0),
}
#: Channel importances that need no data (a policy then decides the compressed model by itself).
DATA_FREE_IMPORTANCES = ("l1", "l2", "bn_scale")
#: The cost metrics :meth:`PolicySpace.cost` computes, for one sample (and ``energy_mj`` with an energy model).
COST_METRICS = ("macs", "params", "nonzero_params", "bytes", "bytes_nonzero")
ENERGY = "energy_mj"

Ratios = tuple[float, ...]


def weights_digest(model: nn.Module) -> str:
    """SHA-256 (first 20 hex digits) of the model's state dict: names, shapes, dtypes and values."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


class PolicySpace(MutableSpace[Ratios], CategoricalSpace[Ratios]):
    """Per-layer (or per-group) kept ratios of one model under one method; see the module docstring."""

    name = "policy"

    def __init__(self, model: nn.Module, example_input: torch.Tensor, method: str = "lowrank",
                 ratios: Sequence[float] | None = None, *, model_name: str = "", importance: str = "l1",
                 layers: Sequence[str] | None = None, energy: Any = None) -> None:
        from .analysis import analyze_layers

        if method not in POLICY_METHODS:
            raise InputError(f"policy search method must be one of {', '.join(POLICY_METHODS)}, got {method!r}")
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(example_input, torch.Tensor) or example_input.dim() < 2:
            raise InputError("example_input must be a batch tensor (N, ...), got "
                             f"{getattr(example_input, 'shape', type(example_input).__name__)}")
        self.method, self.model_name, self.importance = method, model_name or type(model).__name__, importance
        self.ratios = _check_ratios(DEFAULT_RATIOS[method] if ratios is None else ratios)
        self._model = copy.deepcopy(model).eval()
        self._example = example_input[:1].detach().clone()
        self._digest = weights_digest(self._model)
        self._svds: dict[Any, Any] = {}  # low rank: each layer's SVD, computed once
        self.energy = energy  # a BilinearEnergyModel: adds the metric energy_mj
        self.budget: tuple[str, float] | None = None  # (metric, limit) of a view made by within()
        if method == "channel" and importance not in DATA_FREE_IMPORTANCES:
            raise InputError(f"policy search prunes channels by a data-free importance "
                             f"({', '.join(DATA_FREE_IMPORTANCES)}), so that a policy alone decides the model; got "
                             f"{importance!r}")
        info = analyze_layers(self._model, self._example)
        wanted = None if layers is None else set(layers)
        if wanted is not None:
            missing = sorted(wanted - {i.name for i in info})
            if missing:
                raise InputError(f"layers {', '.join(missing[:5])} are not compressible layers of the model")
        eligible = [i for i in info if method in i.supports and (wanted is None or i.name in wanted)]
        if method == "channel":
            groups: dict[int, list[str]] = {}
            for i in eligible:
                if i.group is not None:
                    groups.setdefault(i.group, []).append(i.name)
            self.decisions: tuple[tuple[str, ...], ...] = tuple(tuple(v) for _, v in sorted(groups.items()))
        else:
            self.decisions = tuple((i.name,) for i in eligible)
        if not self.decisions:
            raise InputError(f"the model has no layer that takes {method} (its layers: "
                             f"{', '.join(i.name for i in info[:10])})")
        self._cost = _ChannelCost(self) if method == "channel" else _AdditiveCost(self)
        #: the metrics :meth:`cost` gives exactly (channel pruning: which weights are zero after it depends on
        #: the weights, so non-zero counts are left out)
        self.metrics: tuple[str, ...] = ("macs", "params", "bytes") if method == "channel" else COST_METRICS
        if energy is not None:
            self.metrics += ("energy_mj",)

    # -- the Space protocol -------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        return {"space": self.name, "model": self.model_name, "weights": self._digest, "method": self.method,
                "ratios": list(self.ratios), "decisions": [list(d) for d in self.decisions],
                "importance": self.importance, "input_shape": list(self._example.shape[1:]),
                "energy": None if self.energy is None else self.energy.to_dict()}

    def sample(self, rng: random.Random) -> Ratios:
        return self.repair(tuple(rng.choice(self.ratios) for _ in self.decisions))

    def key(self, candidate: Ratios) -> str:
        return self.identity(candidate)

    def to_json(self, candidate: Ratios) -> list[float]:
        return list(self._check(candidate))

    def from_json(self, data: Any) -> Ratios:
        return self._check(data)

    def build(self, candidate: Ratios, **options: Any) -> nn.Module:
        """The model compressed by the candidate's policy (a copy; the space's model is not changed)."""
        from .apply import apply_policy

        if options:
            raise InputError(f"a policy space builds with no options, got {', '.join(options)}")
        from .lowrank import svd_cache

        with svd_cache(self._svds):  # every candidate truncates the same per-layer SVDs
            return apply_policy(self._model, self.policy(candidate), self._example).model

    def neighbours(self, candidate: Ratios) -> list[Ratios]:
        c = self._check(candidate)
        out = []
        for d, r in enumerate(c):
            i = self.ratios.index(r)
            for j in (i - 1, i + 1):
                if 0 <= j < len(self.ratios):
                    out.append((*c[:d], self.ratios[j], *c[d + 1:]))
        return out

    @property
    def choices(self) -> tuple[int, ...]:
        return (len(self.ratios),) * len(self.decisions)

    def to_choices(self, candidate: Ratios) -> tuple[int, ...]:
        return tuple(self.ratios.index(r) for r in self._check(candidate))

    def from_choices(self, choices: Sequence[int]) -> Ratios:
        if len(choices) != len(self.decisions) or any(not 0 <= int(i) < len(self.ratios) for i in choices):
            raise InputError(f"expected {len(self.decisions)} option indices in 0..{len(self.ratios) - 1}, got "
                             f"{list(choices)!r}")
        return self.repair(tuple(self.ratios[int(i)] for i in choices))

    @property
    def decision_names(self) -> tuple[str, ...]:
        return tuple(d[0] for d in self.decisions)

    # -- the budget -------------------------------------------------------------------------------------
    def within(self, metric: str, limit: float) -> PolicySpace:
        """This space, its samples and option-built candidates repaired to ``metric <= limit`` (module docstring)."""
        if metric not in self.metrics:
            raise InputError(f"a {self.method} policy's exact budget is one of {', '.join(self.metrics)}, "
                             f"got {metric!r}")
        if self.cost(self.uniform(min(self.ratios)))[metric] > limit:
            raise InputError(f"impossible budget: even every decision at ratio {min(self.ratios)} has {metric} > "
                             f"{limit:,.6g}")
        view = copy.copy(self)
        view.budget = (metric, float(limit))
        return view

    def repair(self, candidate: Ratios) -> Ratios:
        """The candidate within :attr:`budget` (unchanged when it is, or when the space has none)."""
        c = self._check(candidate)
        if self.budget is None:
            return c
        metric, limit = self.budget

        def fits(idx: Sequence[int]) -> bool:
            return self._cost.of(tuple(self.ratios[i] for i in idx))[metric] <= limit

        idx = [self.ratios.index(r) for r in c]
        if fits(idx):
            return c
        for step in range(1, max(idx) + 1):
            low = [max(i - step, 0) for i in idx]
            if fits(low):
                raised = True
                while raised:  # one step at a time, in order, up to each decision's sampled ratio
                    raised = False
                    for d, i in enumerate(idx):
                        if low[d] < i:
                            low[d] += 1
                            if fits(low):
                                raised = True
                            else:
                                low[d] -= 1
                return tuple(self.ratios[i] for i in low)
        return c  # not reached: within() refuses budgets the smallest policy breaks

    # -- policies and their cost --------------------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        """The space's (uncompressed) model; do not change it."""
        return self._model

    @property
    def example_input(self) -> torch.Tensor:
        return self._example

    def uniform(self, ratio: float) -> Ratios:
        """Every decision at ``ratio`` (one of :attr:`ratios`)."""
        return self._check((ratio,) * len(self.decisions))

    def policy(self, candidate: Ratios) -> Policy:
        """The candidate as a policy: every layer of a decision with ratio below 1 gets the method's action."""
        c = self._check(candidate)
        return Policy({name: self._action(r) for names, r in zip(self.decisions, c) if r < 1.0 for name in names})

    def cost(self, candidate: Ratios) -> dict[str, Any]:
        """The exact cost of the compressed model (:attr:`metrics`, one sample), without building it."""
        cost = self._cost.of(self._check(candidate))
        return {k: cost[k] for k in self.metrics}

    @property
    def original_cost(self) -> dict[str, Any]:
        return {k: self._cost.original[k] for k in self.metrics}

    def _action(self, ratio: float) -> Action:
        if self.method == "lowrank":
            return LowRank(rank_fraction=ratio)
        if self.method == "channel":
            return ChannelPrune(keep=ratio, importance=self.importance)
        if self.method == "bits":
            return WeightBits(bits=round(32 * ratio))
        return Unstructured(sparsity=round(1.0 - ratio, 10))

    def _check(self, candidate: Any) -> Ratios:
        if not isinstance(candidate, (list, tuple)) or len(candidate) != len(self.decisions):
            raise InputError(f"a {self.method} policy candidate is a list of {len(self.decisions)} ratios (one per "
                             f"decision), got {json.dumps(candidate, default=str)[:200]}")
        out = []
        for d, r in zip(self.decisions, candidate):
            if isinstance(r, bool) or not isinstance(r, (int, float)) or float(r) not in self.ratios:
                raise InputError(f"ratio {r!r} of {d[0]!r} is not one of the space's ratios {list(self.ratios)}")
            out.append(float(r))
        return tuple(out)


def _check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    if isinstance(ratios, (str, bytes)) or not isinstance(ratios, Sequence) or not ratios:
        raise InputError(f"ratios must be a non-empty list of numbers in (0, 1], got {ratios!r}")
    for r in ratios:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 < float(r) <= 1.0:
            raise InputError(f"ratios must be numbers in (0, 1] (the fraction kept), got {r!r}")
    out = tuple(sorted({float(r) for r in ratios}))
    return out if 1.0 in out else (*out, 1.0)  # "leave the layer as it is" is always a choice


class _AdditiveCost:
    """Per layer and ratio, the change of each metric; the cost of a candidate is the original's plus those."""

    def __init__(self, space: PolicySpace) -> None:
        from .analysis import layer_costs
        from .apply import apply_policy, compressed_cost

        model, example = space.model, space.example_input
        names = [d[0] for d in space.decisions]
        self.original: dict[str, Any] = {k: int(v) for k, v in compressed_cost(model, example).items()
                                         if k in COST_METRICS}
        before = layer_costs(model, example, names)
        energy = space.energy
        if energy is not None:
            e_before = _energies(energy, model, example, names, sparse=True)
            self.original[ENERGY] = energy.model_energy(model, example, sparse=True).total_mj
        self.delta: dict[tuple[str, float], dict[str, Any]] = {}
        from .lowrank import svd_cache

        for r in space.ratios:
            if r == 1.0:
                continue
            with svd_cache(space._svds):
                compressed = apply_policy(model, Policy.uniform(names, space._action(r)), example).model
            after = layer_costs(compressed, example, names)
            for n in names:
                d = {k: after[n][k] - before[n][k] for k in ("macs", "params", "nonzero_params")}
                self.delta[n, r] = {**d, "bytes": 4 * d["params"], "bytes_nonzero": 4 * d["nonzero_params"]}
                if space.method == "bits":  # same counts, fewer bits per weight
                    self.delta[n, r].update(_narrowed_bytes(model.get_submodule(n), compressed.get_submodule(n),
                                                            round(32 * r)))
            if energy is not None:
                e_after = _energies(energy, compressed, example, names, sparse=True)
                for n in names:
                    self.delta[n, r][ENERGY] = e_after[n] - e_before[n]
        self.names = names

    def of(self, candidate: Ratios) -> dict[str, Any]:
        out = dict(self.original)
        for n, r in zip(self.names, candidate):
            if r < 1.0:
                for k, v in self.delta[n, r].items():
                    out[k] += v
        return out


class _ChannelCost:
    """The bilinear cost of channel pruning (module docstring): per module, the groups of its input and output
    channels and its geometry; everything else is a constant."""

    def __init__(self, space: PolicySpace) -> None:
        from .analysis import dependency_graph
        from .apply import compressed_cost

        work = copy.deepcopy(space.model).eval()
        example = space.example_input
        info = dependency_graph(work, example)
        self.channels = {g.id: g.channels for g in info.groups}
        self.decision_group = []
        for names in space.decisions:
            g = next(g for g in info.groups if names[0] in g.members)
            self.decision_group.append(g.id)
        out_group: dict[str, int] = {}
        in_group: dict[str, int] = {}
        for g in info.groups:
            for n in g.members:
                out_group[n] = g.id
            for n in g.inputs:
                in_group[n] = g.id
            for n in g.touched:
                if isinstance(work.get_submodule(n), nn.modules.batchnorm._BatchNorm):
                    out_group[n] = g.id
        from ..hardware.energy import layer_shapes

        hw = {n: shape.out_positions for n, shape in layer_shapes(work, example).items()}
        self.modules: list[tuple[str, nn.Module, int | None, int | None, int]] = []
        original = compressed_cost(space.model, example)
        self.original = {k: int(v) for k, v in original.items() if k in COST_METRICS}
        for name, m in work.named_modules():
            touched = name in out_group or name in in_group
            if not touched:
                continue
            if not isinstance(m, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)):
                if any(True for _ in m.parameters(recurse=False)):
                    raise InputError(f"the channel cost model covers Conv2d, Linear and BatchNorm; a coupled group "
                                     f"prunes {name!r} ({type(m).__name__})")
                continue
            self.modules.append((name, m, in_group.get(name), out_group.get(name), hw.get(name, 1)))
        self.energy, self.shapes = space.energy, {}
        if self.energy is not None:
            from ..hardware.energy import layer_shapes

            self.shapes = layer_shapes(space.model, example)
            self.original[ENERGY] = self.energy.model_energy(space.model, example, sparse=False).total_mj
        full = self._modules_cost({})
        self.constant = {k: self.original[k] - full[k] for k in full}

    def _modules_cost(self, kept: dict[int, int]) -> dict[str, Any]:
        macs = params = 0
        energy = 0.0
        for name, m, gi, go, positions in self.modules:
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = self._scaled(m.num_features, go, kept)
                params += 2 * c if m.affine else 0
                continue
            cin = m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
            cout = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            kin = self._scaled(cin, gi, kept)  # a Linear after a flatten has positions x channels inputs
            kout = self._scaled(cout, go, kept)
            if isinstance(m, nn.Conv2d):
                k = m.kernel_size[0] * m.kernel_size[1]
                w = k * kin * kout // m.groups
                macs += positions * w
            else:
                w = kin * kout
                macs += positions * w
            params += w + (kout if m.bias is not None else 0)
            if self.energy is not None and name in self.shapes:
                energy += self.energy.layer_energy(self.shapes[name], kin, kout)
        out: dict[str, Any] = {"macs": macs, "params": params, "bytes": 4 * params}
        if self.energy is not None:
            out[ENERGY] = energy
        return out

    def _scaled(self, features: int, group: int | None, kept: dict[int, int]) -> int:
        """Features left of ``features`` fed by ``group`` (a multiple of its channels) when it keeps ``kept``."""
        if group is None or group not in kept:
            return features
        per_channel, rest = divmod(features, self.channels[group])
        if rest:
            raise InputError(f"{features} features are not a multiple of the {self.channels[group]} channels of "
                             f"group {group}")
        return per_channel * kept[group]

    def of(self, candidate: Ratios) -> dict[str, Any]:
        from .channel import kept_channels

        kept = {g: kept_channels(self.channels[g], ChannelPrune(keep=r), f"group {g}")
                for g, r in zip(self.decision_group, candidate) if r < 1.0}
        cost = self._modules_cost(kept)
        return {k: self.constant[k] + cost[k] for k in cost}


def _narrowed_bytes(module: nn.Module, quantized: nn.Module, bits: int) -> dict[str, int]:
    """The change of ``bytes`` / ``bytes_nonzero`` when ``module``'s weight is stored at ``bits`` bits, as
    ``quantized`` (weights that round to 0 are zeros then)."""
    from .bits import weight_bytes

    n, nz = module.weight.numel(), int(torch.count_nonzero(module.weight))
    nz_after = int(torch.count_nonzero(quantized.weight))
    return {"bytes": weight_bytes(n, bits) - 4 * n, "bytes_nonzero": weight_bytes(nz_after, bits) - 4 * nz}


def _energies(energy: Any, model: nn.Module, example: torch.Tensor, names: Sequence[str], sparse: bool
              ) -> dict[str, float]:
    """Energy of each named layer: the energy model's layers at or under the name (a low-rank pair is two)."""
    layers = energy.model_energy(model, example, sparse=sparse).layers
    return {n: sum(e.energy_mj for k, e in layers.items() if k == n or k.startswith(n + ".")) for n in names}
