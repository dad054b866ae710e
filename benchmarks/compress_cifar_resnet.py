"""Compression of the pretrained CIFAR ResNets on the CIFAR-10 JPEG images, each method recovered the same way.

For each model (ResNet-20, ResNet-56) and method, one :func:`devicefit.compress` run: the pretrained model,
a uniform policy, the same recovery (``--epochs`` of SGD + cosine with distillation from the original, on
the 50,000 JPEG training images), then top-1 on the 10,000 JPEG test images, MACs, params, non-zero params,
and ONNX Runtime latency of the original and the compressed model measured alternately in the same run.

The images are JPEG (quality ~75), so the fair baseline is the *original* model fine-tuned with the same
recipe on the same images: the ``baseline`` row (unstructured at ratio 1.0: masks of all ones, i.e. the
original network, recovered like every other row).

Resumable: each run writes its folder under ``results/.compress_runs/`` (fine-tuning checkpoint included); a
finished run's report is read back. Wall time per run is reported.

    DEVICEFIT_DATA=/work/shared/data python benchmarks/compress_cifar_resnet.py --models resnet20 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, markdown_table, write_results

import devicefit

NAME = "compress_cifar_resnet"
RUNS = RESULTS_DIR / ".compress_runs"
#: (label, method, kept ratio): near 2x fewer MACs for low rank; masks at 2x fewer non-zero weights.
METHODS = (("baseline (original, same recovery)", "unstructured", 1.0), ("low rank 0.5", "lowrank", 0.5),
           ("unstructured 50 %", "unstructured", 0.5))


def one(model: str, label: str, method: str, ratio: float, epochs: float) -> dict[str, Any]:
    folder = RUNS / f"{model}-{method}-{ratio}-e{epochs}"
    report_file = folder / "compress_report.json"
    if report_file.exists():
        return json.loads(report_file.read_text())
    start = time.perf_counter()
    report = devicefit.compress(model, method=method, ratio=ratio, finetune_epochs=epochs, distill=True, out=folder)
    data = {**report.to_dict(), "wall_s": time.perf_counter() - start}
    report_file.write_text(json.dumps(data, indent=1))
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="resnet20,resnet56")
    ap.add_argument("--epochs", type=float, default=1.0)
    args = ap.parse_args()
    rows, data = [], {"epochs": args.epochs, "runs": []}
    for model in args.models.split(","):
        for label, method, ratio in METHODS:
            r = one(model, label, method, ratio, args.epochs)
            data["runs"].append({"model": model, "label": label, **r})
            o, c = r["cost"]["original"], r["cost"]["compressed"]
            rows.append([model, label, r["accuracy"]["original"], r["accuracy"]["compressed"],
                         r["accuracy"]["recovered"], o["macs"] / c["macs"], c["params"], c["nonzero_params"],
                         r["latency_ms"]["original"], r["latency_ms"]["compressed"], r["speedup"], r.get("wall_s")])
            body = "\n".join([
                f"Pretrained CIFAR ResNets (akamaster), CIFAR-10 JPEG images; every row recovered with {args.epochs} "
                "epoch(s) of SGD (lr 0.01, momentum 0.9, cosine) with distillation from the original (T = 4, "
                "alpha = 0.9) on the 50,000 training images; top-1 on the 10,000 test images. Latency: ONNX "
                "Runtime, batch 1, 1 thread, median of 50 runs, original and compressed alternated three times "
                "(median). The baseline is the original network recovered the same way: compare with it.", "",
                markdown_table(["model", "method", "original %", "compressed, before recovery %", "recovered %",
                                "MACs reduction x", "params", "non-zero params", "original ms", "compressed ms",
                                "speed-up x", "wall s"], rows), "",
                "Masks save no time on a dense runtime (ONNX Runtime multiplies the zeros); low rank halves the "
                "MACs, but on this CPU at batch 1 the network's time goes to per-layer overhead more than to "
                "arithmetic, so the measured speed-up is small: see the speed-up column.", ""])
            write_results(NAME, "Compressing CIFAR ResNets", body, data)
            print(model, label, r["accuracy"], r["speedup"], flush=True)


if __name__ == "__main__":
    main()
