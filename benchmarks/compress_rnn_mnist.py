"""Low rank and block pruning of the row-MNIST LSTM and GRU at 2x and 4x fewer parameters, recovered the same way.

The models (one 128-unit layer over the 28 image rows, a linear head) are trained on MNIST ``train8k`` (the first
8,000 images of the official MNIST *test* set, the only MNIST in the data directory) and tested on ``test2k``
(its last 2,000); weights cached under ``results/.models`` (:func:`devicefit.compression.train_mnist_model`).
For each model, method and target, the uniform ratio is found by bisection on the compressed model's exact
cost: **parameters** for low rank (truncated SVD of every input and recurrent matrix and the head) and
**non-zero parameters** for block pruning (RTMobile's blocks of the GEMM matrices, 16x16, columns; the
parameters stay stored unless a sparse format drops them). Then :func:`devicefit.compress` with ``--distill``
recovery (``--epochs`` on train8k, SGD + cosine, lr 0.05), accuracy on test2k, and ONNX Runtime latency of the
original and the compressed model (batch 1, 1 thread, alternated). The baseline row is the original
recovered the same way.

    DEVICEFIT_DATA=/work/shared/data python benchmarks/compress_rnn_mnist.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, cached_run, markdown_table, write_results

import devicefit

NAME = "compress_rnn_mnist"
RUNS = RESULTS_DIR / ".compress_runs"
MODELS = RESULTS_DIR / ".models"
#: (method, the cost it halves or quarters)
METHODS = (("lowrank", "params"), ("block", "nonzero_params"))


def ratio_for(model: torch.nn.Module, method: str, metric: str, fraction: float) -> float:
    """The largest uniform kept ratio whose compressed model has at most ``fraction`` of the original's metric."""
    from devicefit.compression import Policy, apply_policy, compressed_cost, method_action

    example = torch.zeros(1, 1, 28, 28)
    target = fraction * compressed_cost(model, example)[metric]

    def cost(r: float) -> int:
        policy = Policy.uniform(model, method_action(method, r))
        return apply_policy(model, policy, example).cost[metric]

    lo, hi = 0.01, 1.0
    for _ in range(20):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost(mid) <= target else (lo, mid)
    return round(lo, 4)


def one(name: str, weights: Path, method: str, ratio: float, epochs: float) -> dict[str, Any]:
    folder = RUNS / f"{name}-{method}-{ratio}-e{epochs}"
    return cached_run(folder / "benchmark_row.json", lambda: devicefit.compress(
        name, method=method, ratio=ratio, weights=weights, finetune_epochs=epochs, distill=True, lr=0.05,
        out=folder, progress=False).to_dict())


def main() -> None:
    from devicefit.compression import train_mnist_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="lstm,gru")
    ap.add_argument("--epochs", type=float, default=3.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows, runs = [], []
    for name in args.models.split(","):
        weights = MODELS / f"{name}.pt"
        model = train_mnist_model(name, weights, progress=False)
        plan = [("baseline (original, same recovery)", "unstructured", 1.0, None, None)]
        for method, metric in METHODS:
            for fraction in (0.5, 0.25):
                ratio = ratio_for(model, method, metric, fraction)
                plan.append((f"{method}, {1 / fraction:.0f}x fewer {metric.replace('_', ' ')}", method, ratio,
                             metric, fraction))
        for label, method, ratio, metric, fraction in plan:
            r = one(name, weights, method, ratio, args.epochs)
            runs.append({"model": name, "label": label, "ratio": ratio, "metric": metric, "fraction": fraction, **r})
            o, c = r["cost"]["original"], r["cost"]["compressed"]
            rows.append([name, label, ratio, r["accuracy"]["original"], r["accuracy"]["compressed"],
                         r["accuracy"]["recovered"], c["params"], c["nonzero_params"],
                         o["params"] / c["nonzero_params"], o["macs"] / c["macs"], r["speedup"], r["wall_s"]])
            print(name, label, r["accuracy"], flush=True)
            body = "\n".join([
                "Row-MNIST LSTM and GRU (128 units over the 28 rows) trained on MNIST train8k (the first 8,000 "
                "images of the official MNIST test set) and tested on test2k (the other 2,000). Each row: the "
                "uniform ratio found by bisection on the exact cost, then "
                f"{args.epochs} epoch(s) of recovery with distillation from the original (SGD + cosine, lr 0.05) on "
                "train8k. Latency: ONNX Runtime, batch 1, 1 thread, original and compressed alternated; the "
                "low-rank RNN is exported as its unrolled steps (ONNX has no factorised LSTM), so its latency "
                "compares a different graph. All figures from this machine (no GPU).", "",
                markdown_table(["model", "method", "ratio", "original %", "compressed, before recovery %",
                                "recovered %", "params", "non-zero params", "params reduction x (non-zero)",
                                "MACs reduction x", "speed-up x", "wall s"], rows), ""])
            write_results(NAME, "Compressing the row-MNIST LSTM and GRU", body, {"epochs": args.epochs,
                                                                                 "runs": runs})


if __name__ == "__main__":
    main()
