"""Training-time pruning hooks: ADMM (pattern, connectivity, block, unstructured) and reweighted group lasso."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from devicefit.compression.admm import AdmmPruning, ReweightedGroupLasso, group_norms2
from devicefit.compression.masks import block_mask
from devicefit.compression.policy import Block, Pattern, Unstructured
from devicefit.compression.train import FinetuneConfig, TrainingHook, finetune
from devicefit.errors import InputError
from devicefit.models.evaluate import TensorData

from .toy_compress import Crash, image_data, tiny_cnn


class TinyLstm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rnn = nn.LSTM(6, 8, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


def sequence_data(n: int = 128) -> TensorData:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, 5, 6, generator=g)
    return TensorData(x, (x[:, :, 0].sum(1) > 0).long(), "synthetic sequences")


class Distances(TrainingHook):
    """Records the ADMM hook's distance to its constraint set at the start and after every epoch."""

    def __init__(self, admm: AdmmPruning) -> None:
        self.admm, self.seen = admm, []

    def on_start(self, model: nn.Module) -> None:
        self.seen.append(self.admm.constraint_distance(model))

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        self.seen.append(self.admm.constraint_distance(model))


CONFIG = FinetuneConfig(epochs=6, lr=0.05, batch_size=16, augment=False)


def test_admm_pattern_and_connectivity_converges_and_the_final_mask_is_in_the_set():
    model = tiny_cnn()
    admm = AdmmPruning(["0", "2"], Pattern(connectivity=0.25, patterns=4), rho=0.3)
    record = Distances(admm)
    finetune(model, image_data(), CONFIG, hooks=[admm, record], progress=False)
    first, last = record.seen[0], record.seen[-1]
    for layer in ("0", "2"):
        assert first[layer] > 0.6 and last[layer] < 0.15  # the weights were drawn towards the set
        assert record.seen[1][layer] < first[layer] and record.seen[2][layer] < record.seen[1][layer]
    assert admm.updates == 6  # once per epoch
    kept = admm.prune(model)
    for layer in ("0", "2"):
        conv = model.get_submodule(layer)
        masks = conv.weight_mask.reshape(-1, 9)
        library = admm.state_dict()["library"][layer].reshape(-1, 9)
        kept_kernels = masks[masks.sum(1) > 0]
        assert set(masks.sum(1).tolist()) == {0.0, 4.0}  # every kept kernel: 4 weights
        assert all(any(torch.equal(k, p) for p in library) for k in kept_kernels)  # ... in a library pattern
        assert len(library) == 4 and bool((kept_kernels[:, 4] == 1).all())  # the centre always kept
        assert len(masks) - len(kept_kernels) == round(0.25 * len(masks))  # connectivity: whole kernels removed
        assert kept[layer] == pytest.approx(0.75 * 4 / 9)
        assert bool((conv.weight.reshape(-1, 9)[masks == 0] == 0).all())
    assert admm.extra_loss(model) is None  # done: masked fine-tuning follows without the penalty
    weights = model[2].weight.detach().clone()
    finetune(model, image_data(64), FinetuneConfig(epochs=1, lr=0.05, batch_size=16, augment=False), hooks=[admm],
             progress=False)
    assert admm.updates == 6 and bool((model[2].weight[weights == 0] == 0).all())


def test_admm_update_is_the_projection_and_the_dual_step():
    model = tiny_cnn()
    admm = AdmmPruning(["2"], Unstructured(sparsity=0.7), rho=0.5, update_every=3)
    admm.on_start(model)
    state = admm.state_dict()
    w0 = model[2].weight.detach().clone()
    assert torch.equal(state["z"]["2"]["unstructured"], w0 * (w0.abs() >= w0.abs().flatten().kthvalue(
        round(0.7 * w0.numel()) + 1).values))  # Z = proj(W): the 30 % largest kept
    assert not state["u"]["2"]["unstructured"].any()
    with torch.no_grad():
        model[2].weight.add_(0.01 * torch.randn_like(w0))
    w = model[2].weight.detach().clone()
    u_old = state["u"]["2"]["unstructured"].clone()
    loss = admm.extra_loss(model)
    z_old = state["z"]["2"]["unstructured"]
    assert float(loss.detach()) == pytest.approx(0.25 * float((w - z_old + u_old).pow(2).sum()), rel=1e-6)
    loss.backward()
    assert torch.allclose(model[2].weight.grad, 0.5 * (w - z_old + u_old))
    for step in (1, 2):
        admm.after_step(model, step)
    assert admm.updates == 0
    admm.after_step(model, 3)
    assert admm.updates == 1
    v = w + u_old
    z = admm.state_dict()["z"]["2"]["unstructured"]
    keep = v.abs().flatten().topk(w.numel() - round(0.7 * w.numel())).indices
    expected = torch.zeros_like(v).flatten()
    expected[keep] = v.flatten()[keep]
    assert torch.equal(z, expected.reshape(v.shape))
    assert torch.equal(admm.state_dict()["u"]["2"]["unstructured"], u_old + w - z)


def test_admm_block_on_lstm_matrices():
    model = TinyLstm()
    action = Block(sparsity=0.5, block=(8, 4), prune="columns")
    admm = AdmmPruning(["rnn"], action, rho=0.3)
    record = Distances(admm)
    config = FinetuneConfig(epochs=6, lr=0.05, batch_size=8, augment=False)
    finetune(model, sequence_data(), config, hooks=[admm, record], progress=False)
    assert set(record.seen[0]) == {"rnn.weight_ih_l0", "rnn.weight_hh_l0"}
    # (not monotone here: the columns each block keeps change between updates early on)
    assert all(record.seen[-1][k] < 0.25 * record.seen[0][k] for k in record.seen[0])
    weights = {k: getattr(model.rnn, k).detach().clone() for k in ("weight_ih_l0", "weight_hh_l0")}
    admm.prune(model)
    for name, w in weights.items():
        mask = getattr(model.rnn, f"{name}_mask")
        assert torch.equal(mask, block_mask(w, (8, 4), 0.5, "columns"))
        tiles = mask.reshape(mask.shape[0] // 8, 8, -1)
        column_kept = tiles.amax(1)  # a column segment of a block is kept whole or removed whole
        assert torch.equal(tiles.amin(1), column_kept)
    with torch.no_grad():  # the masked LSTM still runs, pruned weights at zero
        assert model(torch.randn(2, 5, 6)).shape == (2, 2)
    assert float((model.rnn.weight_hh_l0 == 0).float().mean()) == pytest.approx(0.5, abs=0.02)


def test_admm_resumes_exactly_from_a_checkpoint(tmp_path):
    config = FinetuneConfig(epochs=3, lr=0.05, batch_size=32, augment=False, checkpoint_every=1)
    data = image_data(128)
    action = Pattern(connectivity=0.25, patterns=4)

    straight = tiny_cnn()
    admm_straight = AdmmPruning(["2"], action, rho=0.3, update_every=2)
    finetune(straight, data, config, hooks=[admm_straight, Crash(None)], checkpoint=tmp_path / "a.ckpt",
             progress=False)

    resumed = tiny_cnn()
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(resumed, data, config, hooks=[AdmmPruning(["2"], action, rho=0.3, update_every=2), Crash(7)],
                 checkpoint=tmp_path / "b.ckpt", progress=False)
    admm_resumed = AdmmPruning(["2"], action, rho=0.3, update_every=2)
    history = finetune(resumed, data, config, hooks=[admm_resumed, Crash(None)], checkpoint=tmp_path / "b.ckpt",
                       progress=False)
    assert history.resumed_from_step == 6
    assert torch.equal(straight[2].weight, resumed[2].weight)
    a, b = admm_straight.state_dict(), admm_resumed.state_dict()
    assert a["updates"] == b["updates"] == 6
    assert torch.equal(a["z"]["2"]["pattern"], b["z"]["2"]["pattern"])
    assert torch.equal(a["u"]["2"]["connectivity"], b["u"]["2"]["connectivity"])
    assert torch.equal(a["library"]["2"], b["library"]["2"])


def test_reweighted_penalty_gradient_matches_the_hand_computation():
    layer = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0, 0.0, 3.0], [1.0, 0.0, 0.0, 4.0]]))
    model = nn.Sequential(layer)
    hook = ReweightedGroupLasso(["0"], Block(sparsity=0.5, block=(2, 2), prune="columns"), lam=0.1, eps=1.0)
    hook.on_start(model)
    # groups: the 4 columns (2 rows each); squared norms 2, 4, 0, 25 -> alpha = 1/3, 1/5, 1, 1/26
    assert torch.allclose(hook.alpha["0"].flatten(), torch.tensor([1 / 3, 1 / 5, 1.0, 1 / 26]))
    penalty = hook.extra_loss(model)
    assert float(penalty.detach()) == pytest.approx(0.1 * (2 / 3 + 4 / 5 + 0 + 25 / 26))
    penalty.backward()
    expected = 2 * 0.1 * torch.tensor([[1 / 3 * 1, 1 / 5 * 2, 0.0, 1 / 26 * 3], [1 / 3 * 1, 0.0, 0.0, 1 / 26 * 4]])
    assert torch.allclose(layer.weight.grad, expected)


def small_to_large(model: nn.Module) -> float:
    """Mean squared norm of the 4 smallest of the 9 column groups of each block over that of the 4 largest."""
    norms = group_norms2(model[2].weight.detach(), (4, 9), "columns").flatten(0, 1).sort(1).values
    return float(norms[:, :4].mean() / norms[:, -4:].mean())


def test_reweighting_prunes_the_small_groups_to_the_target():
    plain = tiny_cnn()
    finetune(plain, image_data(), CONFIG, progress=False)
    model = tiny_cnn()
    block = Block(sparsity=0.5, block=(4, 9), prune="columns")
    hook = ReweightedGroupLasso(["2"], block, lam=3e-4, eps=1e-3)
    finetune(model, image_data(), CONFIG, hooks=[hook], progress=False)
    assert hook.reweights == 1 + 6  # at the start, then after every epoch
    assert small_to_large(model) < 0.5 * small_to_large(plain)  # 0.17 against 0.43: small groups driven down
    w = model[2].weight.detach().clone()
    kept = hook.prune(model)
    assert kept["2"] == pytest.approx(5 / 9, abs=1e-6)  # round(0.5 * 9) = 4 of 9 columns per block removed
    assert torch.equal(model[2].weight_mask, block_mask(w.reshape(8, -1), (4, 9), 0.5, "columns").reshape(w.shape))


def test_reweighted_alpha_follows_the_weights_every_n_epochs():
    model = nn.Sequential(nn.Linear(6, 4))
    hook = ReweightedGroupLasso(["0"], Block(sparsity=0.5, block=(2, 3), prune="rows"), eps=1e-3, reweight_every=2)
    hook.on_start(model)
    before = hook.alpha["0"].clone()
    with torch.no_grad():
        model[0].weight.mul_(2.0)
    hook.after_epoch(model, 0)
    assert torch.equal(hook.alpha["0"], before)
    hook.after_epoch(model, 1)
    norms2 = group_norms2(model[0].weight.detach(), (2, 3), "rows")
    assert norms2.shape == (2, 2, 2)  # 2 x 2 blocks, 2 row segments each
    assert torch.allclose(hook.alpha["0"], 1 / (norms2 + 1e-3))


def test_hook_states_round_trip_through_a_weights_only_checkpoint():
    model = tiny_cnn()
    admm = AdmmPruning(["0", "2"], Pattern(connectivity=0.5, patterns=2), rho=0.2, update_every=1)
    rew = ReweightedGroupLasso(["0"], Block(sparsity=0.5, block=(4, 3)))
    for hook in (admm, rew):
        hook.on_start(model)
    with torch.no_grad():
        model[0].weight.add_(0.1)
    admm.update()
    rew.reweight()
    buffer = io.BytesIO()
    torch.save({"admm": admm.state_dict(), "rew": rew.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    admm2 = AdmmPruning(["0", "2"], Pattern(connectivity=0.5, patterns=2), rho=0.2, update_every=1)
    rew2 = ReweightedGroupLasso(["0"], Block(sparsity=0.5, block=(4, 3)))
    fresh = tiny_cnn()
    with torch.no_grad():
        fresh[0].weight.copy_(model[0].weight)
    for hook, state in ((admm2, saved["admm"]), (rew2, saved["rew"])):
        hook.on_start(fresh)
        hook.load_state_dict(state)
    assert float(admm2.extra_loss(fresh).detach()) == float(admm.extra_loss(model).detach())
    assert float(rew2.extra_loss(fresh).detach()) == float(rew.extra_loss(model).detach())
    assert admm2.updates == 1 and rew2.reweights == 2
    other = AdmmPruning(["2"], Pattern(connectivity=0.5, patterns=2))
    other.on_start(fresh)
    with pytest.raises(InputError, match="is for layers"):
        other.load_state_dict(saved["admm"])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: AdmmPruning(["0"], "pattern"), "Unstructured, Block or Pattern"),
        (lambda: AdmmPruning([], Unstructured(0.5)), "non-empty list"),
        (lambda: AdmmPruning("0", Unstructured(0.5)), "non-empty list"),
        (lambda: AdmmPruning(["0"], Unstructured(0.5), rho=-1.0), "rho must be a positive number"),
        (lambda: AdmmPruning(["0"], Unstructured(0.5), rho=math.nan), "rho must be a positive number"),
        (lambda: AdmmPruning(["0"], Unstructured(0.5), update_every=0), "update_every"),
        (lambda: AdmmPruning(["6"], Pattern()).on_start(tiny_cnn()), "needs 3x3 convolutions"),
        (lambda: AdmmPruning(["nope"], Unstructured(0.5)).on_start(tiny_cnn()), "no layer 'nope'"),
        (lambda: AdmmPruning(["1"], Unstructured(0.5)).on_start(tiny_cnn()), "is a ReLU"),
        (lambda: ReweightedGroupLasso(["0"], Unstructured(0.5)), "Block action"),
        (lambda: ReweightedGroupLasso(["0"], Block(), eps=0.0), "eps must be a positive number"),
        (lambda: ReweightedGroupLasso(["0"], Block(), reweight_every=1.5), "reweight_every"),
        (lambda: ReweightedGroupLasso(["0"], Block()).load_state_dict({"alpha": {}}), "needs alpha, reweights"),
        (lambda: AdmmPruning(["6"], Unstructured(0.5)).prune(_pruned_linear()), "already masked"),
    ],
)
def test_bad_input_is_refused(make, message):
    with pytest.raises(InputError, match=message):
        make()


def _pruned_linear() -> nn.Module:
    model = tiny_cnn()
    torch.nn.utils.prune.l1_unstructured(model[6], "weight", 0.5)
    return model
