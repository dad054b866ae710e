"""Joint pruning and quantization of LeNet-5 on MNIST to a target size (Yang et al., CVPR 2020, arXiv 1910.05897).

LeNet-5-Caffe is trained once with :func:`devicefit.compression.train_mnist_model` on MNIST ``train8k`` (the first
8,000 images of the official MNIST *test* set, the only MNIST in the data directory), then compressed with
:func:`devicefit.compression.joint.compress_to_size` to several ratios of its weights against float32, toward the
paper's ~2,000x: the ADMM phase, the hard projection (exact knapsacks), masked fine-tuning with quantized weights.
Top-1 is measured on ``test2k`` (the last 2,000 images, never trained on) before and after.

Each target's result is saved in ``benchmarks/results/.joint_runs/ratio<R>.json`` and read back when present; the
training checkpoints beside it make an interrupted target continue where it stopped (its wall time is then that of
the run that finished it). One torch thread.

    DEVICEFIT_DATA=/work/shared/data python benchmarks/joint_lenet5.py [--targets 100,500,1000,2000]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, markdown_table, write_results

from devicefit._files import write_atomic
from devicefit.compression import FinetuneConfig, train_mnist_model
from devicefit.compression.joint import FLOAT_BITS, compress_to_size
from devicefit.models import evaluate_accuracy, mnist_split

NAME = "joint_lenet5"
RUNS = RESULTS_DIR / ".joint_runs"
MODEL = RESULTS_DIR / ".models" / "lenet5.pt"
TARGETS = (100, 500, 1000, 2000)
ADMM = FinetuneConfig(epochs=100.0, lr=0.05, batch_size=128, augment=False)
FINETUNE = FinetuneConfig(epochs=20.0, lr=0.005, batch_size=128, augment=False)
RHO = 0.01


def run_target(base: torch.nn.Module, ratio: int, before: float) -> dict[str, Any]:
    """One target, from its saved result when there is one."""
    saved = RUNS / f"ratio{ratio}.json"
    if saved.exists():
        return json.loads(saved.read_text())
    train, test = mnist_split("train8k"), mnist_split("test2k")
    model = copy.deepcopy(base)
    start = time.perf_counter()
    result = compress_to_size(model, train, target_ratio=ratio, admm_config=ADMM, finetune_config=FINETUNE, rho=RHO,
                              eval_data=test, checkpoint_dir=RUNS / f"ratio{ratio}", progress=False)
    wall = time.perf_counter() - start
    report = result.report
    biases = sum(m.bias.numel() for m in model.modules() if getattr(m, "bias", None) is not None)
    record = {"target_ratio": ratio, "top1_before": before, "top1_after": result.accuracy,
              "loss_points": before - result.accuracy, "wall_s": wall, "bias_params": biases,
              "report": report.as_dict(), "admm_loss_per_epoch": result.admm.loss_per_epoch,
              "finetune_loss_per_epoch": result.finetune.loss_per_epoch if result.finetune else None}
    RUNS.mkdir(parents=True, exist_ok=True)
    write_atomic(saved, (json.dumps(record, indent=2) + "\n").encode())
    return record


def whole_ratio(r: dict[str, Any]) -> float:
    """float32 weights and biases against the counted size plus the codebooks and the float32 biases."""
    rep = r["report"]
    dense = rep["dense_bits"] + FLOAT_BITS * r["bias_params"]
    return dense / (rep["total_bits"] + rep["codebook_bits"] + FLOAT_BITS * r["bias_params"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", default=",".join(map(str, TARGETS)), help="compression ratios, comma-separated")
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = train_mnist_model("lenet5", MODEL, progress=False).eval()
    before = evaluate_accuracy(base, mnist_split("test2k"))
    print(f"LeNet-5 test2k top-1 {before:.2f} %", flush=True)
    runs = []
    for ratio in (int(t) for t in args.targets.split(",")):
        r = run_target(base, ratio, before)
        runs.append(r)
        print(f"{ratio}x: {r['report']['ratio']:.1f}x reached, top-1 {r['top1_after']:.2f} % "
              f"({r['loss_points']:+.2f} points lost), {r['wall_s']:.0f} s", flush=True)
    rows, layer_rows = [], []
    for r in runs:
        rep = r["report"]
        rows.append([f"{r['target_ratio']:,}x", f"{rep['ratio']:,.1f}x", f"{rep['total_bits']:,}",
                     f"{rep['total_bytes']:,}", f"{r['top1_before']:.2f}", f"{r['top1_after']:.2f}",
                     f"{r['loss_points']:.2f}", f"{whole_ratio(r):,.0f}x", f"{r['wall_s']:.0f}"])
        layer_rows.append([f"{r['target_ratio']:,}x"] + [f"{x['nnz']:,} x {x['bits']} b" for x in rep["layers"]])
    names = [x["name"] for x in runs[0]["report"]["layers"]] if runs else []
    weights = {x["name"]: x["weights"] for x in runs[0]["report"]["layers"]} if runs else {}
    body = "\n".join([
        "LeNet-5-Caffe (431,080 parameters, 430,500 of them in the 4 weight tensors) trained on MNIST train8k (the "
        "first 8,000 images of the official MNIST test set) and tested on test2k (its last 2,000), then pruned and "
        "quantized jointly to each target size by `compress_to_size` (arXiv 1910.05897): ADMM phase "
        f"({ADMM.epochs:g} epochs, lr {ADMM.lr}, batch {ADMM.batch_size}, rho {RHO}, projections after every epoch), "
        f"hard projection, masked fine-tuning with quantized weights ({FINETUNE.epochs:g} epochs, lr "
        f"{FINETUNE.lr}); SGD momentum 0.9, weight decay 5e-4, cosine schedule, seed 0, one thread.", "",
        "Size as the paper counts it: the non-zero weights times their layer's bit width (indices into a k-means "
        "codebook of 2^bits levels per layer). Not counted, as in the paper: the positions of the non-zeros, the "
        "codebooks (2^bits float32 levels per layer) and the 580 float32 biases; the last ratio column adds the "
        "codebooks and biases to both sides (the positions are still not counted).", "",
        markdown_table(["target", "reached (weights)", "size bits", "size bytes", "top-1 before %", "top-1 after %",
                        "loss points", "with codebooks + biases", "wall s"], rows), "",
        "Kept weights x bits per layer (" + ", ".join(f"{n}: {weights[n]:,} weights" for n in names) + "). The "
        "initial width is chosen automatically (the uniform width whose projection is closest to the trained "
        "weights); the bit-width knapsack then only trades bits between layers at the budget the pruning filled, so "
        "widths that start at 1 bit everywhere stay there.", "",
        markdown_table(["target", *names], layer_rows)])
    data = {"model": "lenet5", "train": "mnist train8k", "test": "mnist test2k", "admm": asdict(ADMM),
            "finetune": asdict(FINETUNE), "rho": RHO, "runs": runs}
    md, _ = write_results(NAME, "Joint pruning and quantization of LeNet-5 to a target size", body, data)
    print(f"wrote {md}")


if __name__ == "__main__":
    main()
