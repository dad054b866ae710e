"""int8 post-training quantization of the pretrained ResNet-20: accuracy and ONNX Runtime speed-up against fp32.

The model is exported to ONNX and quantized with onnxruntime's static QDQ quantizer
(:func:`devicefit.compression.quantize_onnx_int8`: per-channel int8 weights, uint8 activations, MinMax
calibration on the 960 lossless CIFAR-10 training images), then: top-1 of fp32 and int8 in ONNX Runtime on the
10,000 JPEG test images, the torch fake-quant estimate, the file sizes, and latency measured alternately
(ABBA rounds) at batch 1 (1 and 2 threads) and batch 32.

    DEVICEFIT_DATA=/work/shared/data python benchmarks/compress_int8.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, write_results

from devicefit.compression import Int8Config, TimingProtocol, compare_models, export_compressed, fake_quantize
from devicefit.hardware.measure import export_onnx
from devicefit.models import get_model
from devicefit.models.evaluate import calibration_batch, evaluate_onnx_accuracy, load_images

NAME = "compress_int8"


def main() -> None:
    torch.set_num_threads(1)
    model = get_model("resnet20", pretrained=True).eval()
    example = torch.zeros(1, 3, 32, 32)
    calibration = calibration_batch("cifar10", 960)
    test = load_images("cifar10", "test")
    x = torch.cat([b for b, _ in test.batches(1000)])
    path = Path(tempfile.mkdtemp()) / "resnet20_int8.onnx"
    int8_bytes = export_compressed(model, example, path, int8=Int8Config(calibration))
    fp32 = export_onnx(model, example)
    acc = {"fp32": evaluate_onnx_accuracy(fp32, test), "int8": evaluate_onnx_accuracy(path, test)}
    with torch.no_grad():
        fq = fake_quantize(model, calibration.split(64))
        acc["fake-quant (torch)"] = 100.0 * float((fq(x).argmax(1).numpy() == test.y).mean())
    rows = []
    for batch, threads in ((1, 1), (1, 2), (32, 1)):
        ex = torch.zeros(batch, 3, 32, 32)
        c = compare_models(model, model, ex, runtimes=("onnxruntime",), int8=Int8Config(calibration),
                           protocol=TimingProtocol(threads=threads, warmup=20, rounds=10,
                                                   repeats_per_round=50 if batch == 1 else 10))
        r = c.runtimes[0]
        rows.append([batch, threads, r.original.median_ms, r.compressed.median_ms, r.speedup,
                     f"{r.speedup_low:.2f}-{r.speedup_high:.2f}"])
        print(batch, threads, r.speedup, flush=True)
    data = {"accuracy": acc, "bytes": {"fp32": len(fp32), "int8": int8_bytes},
            "latency": [dict(zip(["batch", "threads", "fp32_ms", "int8_ms", "speedup", "rounds"], r)) for r in rows]}
    body = "\n".join([
        "Pretrained ResNet-20 (akamaster), int8 by onnxruntime's static QDQ quantizer (per-channel int8 weights, "
        "uint8 activations, MinMax calibration on the 960 lossless CIFAR-10 training images). Top-1 on the "
        "10,000 JPEG test images in ONNX Runtime (fake-quant: the torch estimate). Latency: ONNX Runtime, "
        "fp32 and int8 alternated in 10 ABBA rounds; speed-up = ratio of medians, with the range over rounds.", "",
        markdown_table(["model", "top-1 %"], [[k, v] for k, v in acc.items()]), "",
        f"ONNX file: {len(fp32):,} bytes fp32, {int8_bytes:,} bytes int8.", "",
        markdown_table(["batch", "threads", "fp32 ms", "int8 ms", "speed-up x", "range over rounds"], rows)])
    write_results(NAME, "int8 ResNet-20 in ONNX Runtime", body, data)


if __name__ == "__main__":
    main()
