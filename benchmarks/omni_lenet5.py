"""Omni-sparsity (arXiv 2110.08352) on LeNet-5 / MNIST: one supernet against magnitude pruning of a dense model.

LeNet-5 is trained on MNIST ``train8k`` (the first 8,000 of the official MNIST test images, the only MNIST in
the data directory) and tested on ``test2k`` (the other 2,000). Compared, at sparsity 50/75/90/95/98 % of every
Conv/Linear weight:

(a) one omni-sparsity supernet (:class:`devicefit.compression.omni.OmniSparsity`, 10 epochs), its nested
    sub-models evaluated without retraining; plus :func:`~devicefit.compression.omni.pick_sub_models`'s best
    per-layer sub-model within each level's parameter budget (selected on 1,000 train8k images, tested on test2k);
(b) the dense model (10 epochs, the same recipe) pruned by magnitude at each level, no retraining;
(c) the dense model pruned at each level and fine-tuned separately, 2 epochs per level (10 epochs over the five
    levels, the omni run's epoch count; note (c) also starts from the 10-epoch dense model).

Resumable: every run's result (and the trained weights) goes to ``benchmarks/results/.omni_runs/``.

    DEVICEFIT_DATA=/work/shared/data python benchmarks/omni_lenet5.py
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, markdown_table, write_results

from devicefit.compression.omni import OmniSparsity, kept_parameters, pick_sub_models, sub_model
from devicefit.compression.train import MNIST_TRAINING, FinetuneConfig, finetune
from devicefit.models import get_model, load_images, load_weights
from devicefit.models.evaluate import evaluate_accuracy

NAME = "omni_lenet5"
RUNS = RESULTS_DIR / ".omni_runs"
LEVELS = (0.0, 0.5, 0.75, 0.9, 0.95, 0.98)
REPORTED = LEVELS[1:]
TRAIN = FinetuneConfig(**MNIST_TRAINING["lenet5"])  # 10 epochs, lr 0.05, batch 64, SGD + cosine
OMNI_TRAIN = FinetuneConfig(**{**MNIST_TRAINING["lenet5"], "lr": 0.02})  # three losses a step: 0.05 diverged
FINETUNE_EPOCHS = 2.0


def _cached(name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    path = RUNS / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    start = time.time()
    result = compute()
    result["seconds"] = round(time.time() - start, 1)
    RUNS.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)
    print(name, result, flush=True)
    return result


def _trained(name: str, train: Any, omni: bool) -> torch.nn.Module:
    """The dense or omni-trained LeNet-5, cached as weights (training resumes from its checkpoint)."""
    weights = RUNS / f"{name}.pt"
    torch.manual_seed(0)
    model = get_model("lenet5")
    if weights.exists():
        return load_weights(model, weights)
    hook = OmniSparsity(levels=LEVELS, update_every=10)
    finetune(model, train, OMNI_TRAIN if omni else TRAIN, hooks=[hook] if omni else [],
             checkpoint=RUNS / f"{name}.ckpt.pt", progress=False)
    hook.remove()
    RUNS.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights)
    return model


def main() -> None:
    torch.set_num_threads(1)
    train, test = load_images("mnist", "train8k"), load_images("mnist", "test2k")
    dense = _trained("dense", train, omni=False)
    omni = _trained("omni", train, omni=True)
    rows, data = [], {"levels": {}}
    budgets = [kept_parameters(dense, s) for s in REPORTED]
    picked = _cached("picked", lambda: {str(b): vars(c) for b, c in pick_sub_models(
        omni, LEVELS, train, budgets, limit=1000, max_candidates=200).items()})
    for s, budget in zip(REPORTED, budgets):
        choice = picked[str(budget)]
        result = _cached(f"level_{s}", lambda s=s, choice=choice: {
            "omni": evaluate_accuracy(sub_model(omni, s), test),
            "omni_picked": evaluate_accuracy(sub_model(omni, choice["levels"]), test),
            "dense_pruned": evaluate_accuracy(sub_model(dense, s), test)})
        tuned = _cached(f"finetuned_{s}", lambda s=s: {"dense_pruned_finetuned": _finetuned(dense, s, train, test)})
        result = {**result, **tuned, "parameters": budget, "picked_levels": choice["levels"],
                  "picked_parameters": choice["parameters"]}
        data["levels"][str(s)] = result
        rows.append([f"{100 * s:g} %", f"{budget:,}", result["omni"], result["omni_picked"], result["dense_pruned"],
                     result["dense_pruned_finetuned"], _levels_text(choice["levels"])])
    dense_acc = _cached("dense_full", lambda: {"dense": evaluate_accuracy(dense, test),
                                               "omni_dense": evaluate_accuracy(sub_model(omni, 0.0), test)})
    data["dense"] = dense_acc
    body = "\n".join([
        "LeNet-5 trained on MNIST train8k (the first 8,000 of the official MNIST test images), top-1 % on test2k "
        "(the other 2,000). Sparsity of every Conv/Linear weight (biases kept); parameters = non-zero parameters. "
        "(a) one omni-sparsity supernet (arXiv 2110.08352; sandwich rule: densest on the labels, sparsest + one "
        "random per-layer sub-model by in-place distillation, masks refreshed every 10 steps; 10 epochs at lr "
        "0.02, as lr 0.05 diverged), "
        "sub-models without retraining; 'omni picked': the best per-layer sub-model within that budget "
        "(200 candidates scored on 1,000 train8k images); (b) the dense model (10 epochs) pruned by magnitude, "
        "no retraining; (c) (b) fine-tuned 2 epochs per level (lr 0.01, masks kept).", "",
        f"Dense model: {dense_acc['dense']:.2f} %; omni supernet at sparsity 0: {dense_acc['omni_dense']:.2f} %.", "",
        markdown_table(["sparsity", "parameters", "(a) omni", "(a) omni picked", "(b) dense pruned",
                        "(c) pruned + fine-tuned", "picked levels (conv1, conv2, fc1, fc2)"], rows)])
    write_results(NAME, "Omni-sparsity LeNet-5 on MNIST", body, data)


def _finetuned(dense: torch.nn.Module, level: float, train: Any, test: Any) -> float:
    model = sub_model(dense, level).train()
    cfg = FinetuneConfig(epochs=FINETUNE_EPOCHS, lr=0.01, batch_size=64, augment=False)
    finetune(model, train, cfg, progress=False)
    return evaluate_accuracy(model, test)


def _levels_text(levels: dict[str, float]) -> str:
    return ", ".join(f"{v:g}" for v in levels.values())


if __name__ == "__main__":
    main()
