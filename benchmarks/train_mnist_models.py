"""Train the built-in MNIST models (LeNet-5, row-LSTM, row-GRU) once, for the compression benchmarks.

Each model is trained from a fixed seed on MNIST ``train8k`` (the first 8,000 images of the official MNIST
*test* set, the only MNIST in the data directory) with the toolkit's one training loop
(:func:`devicefit.compression.train_mnist_model`: SGD momentum 0.9, weight decay 5e-4, cosine to zero; settings in
``devicefit.compression.train.MNIST_TRAINING``) and tested on ``test2k`` (the last 2,000, never trained on). Weights
are written as state dicts to ``--out`` (default ``benchmarks/results/.models/``, git-ignored); a model whose
file exists is loaded, not retrained (delete the file to retrain). Wall time is that of the training.

    DEVICEFIT_DATA=/work/shared/data python benchmarks/train_mnist_models.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, markdown_table, write_results

NAME = "train_mnist_models"


def main() -> None:
    import torch

    from devicefit.compression import train_mnist_model
    from devicefit.compression.train import MNIST_TRAINING
    from devicefit.models import evaluate_accuracy, mnist_split

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / ".models", help="folder for the weights")
    ap.add_argument("--models", default=",".join(MNIST_TRAINING))
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    test = mnist_split("test2k")
    rows, runs = [], []
    for name in args.models.split(","):
        path = args.out / f"{name}.pt"
        cached = path.exists()
        start = time.perf_counter()
        model = train_mnist_model(name, path)
        wall = time.perf_counter() - start
        acc = evaluate_accuracy(model, test)
        params = sum(p.numel() for p in model.parameters())
        runs.append({"model": name, "settings": MNIST_TRAINING[name], "test2k_top1": acc, "params": params,
                     "train_wall_s": None if cached else wall, "weights": str(path)})
        rows.append([name, f"{params:,}", str(MNIST_TRAINING[name]), f"{acc:.2f}",
                     "cached" if cached else f"{wall:.0f}"])
        print(f"{name}: test2k top-1 {acc:.2f} %, {'loaded from ' + str(path) if cached else f'{wall:.0f} s'}")
    body = ("Trained on MNIST train8k (first 8,000 images of the official test set), tested on test2k (its last "
            "2,000). SGD momentum 0.9, weight decay 5e-4, cosine to zero, seed 0.\n\n"
            + markdown_table(["model", "params", "settings", "test2k top-1 %", "train wall s"], rows))
    if all(r["train_wall_s"] is not None for r in runs):  # only a run that trained everything is a result
        md, _ = write_results(NAME, "MNIST models trained on train8k", body, {"runs": runs})
        print(f"wrote {md}")


if __name__ == "__main__":
    main()
