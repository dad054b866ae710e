"""AutoML compression: searched per-layer policies against uniform ratios and Torch-Pruning, at the same budget.

Part 1, iterative against one shot (arXiv 2008.02897): low rank to 5x fewer parameters of the row-MNIST LSTM
(trained on MNIST ``train8k``, the first 8,000 images of the official MNIST test set; tested on ``test2k``, the
other 2,000) and of ResNet-56 on CIFAR-10 (``--iterative``); policies searched in 1 round (one shot) and in 3
rounds, each round recovered with the same distillation (``--rnn-epochs`` / ``--cnn-epochs`` per round; one shot
gets 3 times that; the LSTM's 3 rounds run again with 3 times that each, ``--cnn-same-per-round`` does the same
for ResNet-56). The LSTM's rounds search greedily; ResNet-56's with ``--cnn-search`` (default rl: greedy would
estimate its 55 layers at 7 ratios, 385 estimates a round).

Part 2, policy searches on CIFAR ResNets (``--model``, default resnet20,resnet56) to ``--macs`` of the original's
MACs with channel pruning: greedy (AIMET), rl (AMC/ShrinkML bounded agent), evolution, optuna (TPE), each
``--evaluations`` accuracy estimates (a slice of the training images, no fine-tuning, BN re-calibrated); the
largest uniform keep ratio within the same MACs (bisected); Torch-Pruning's global magnitude pruner bisected to
the same MACs. Every policy is then recovered with the same ``--epochs`` of distillation and measured by
:func:`devicefit.compress` (test accuracy, MACs, ONNX Runtime speed-up). About 3 CPU hours here in all.

Resumable: searches live in ``results/.automl/*.sqlite``, runs in ``results/.automl/<row>/``.

    DEVICEFIT_DATA=/work/shared/data python benchmarks/automl_compress.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, bisect_boundary, markdown_table, write_results

NAME = "automl_compress"
RUNS = RESULTS_DIR / ".automl"
SEARCHES = ("greedy", "rl", "evolution", "optuna")
SEARCH_NAMES = {"rl": "RL (the AMC/ShrinkML bounded agent)", "evolution": "Aging evolution", "optuna": "TPE"}


#: per model of the iterative rows: data set, input shape, recovery learning rate, augmentation, clipping
ITERATIVE = {"lstm": ("mnist", (1, 28, 28), 0.05, False, 5.0), "resnet56": ("cifar10", (3, 32, 32), 0.01, True, None)}


def iterative_rows(model_name: str, epochs: float, search: str = "greedy", evaluations: int = 60,
                   same_per_round: bool = True) -> list[dict[str, Any]]:
    """One shot and 3 rounds to 0.2 of the parameters (low rank, ``search`` policies), each round recovered by
    distillation: the same total epochs (3 x ``epochs`` / 3) and, with ``same_per_round``, the same epochs per
    round (3 x ``epochs`` each)."""
    from devicefit.compression import FinetuneConfig, compressed_cost, train_mnist_model
    from devicefit.models import evaluate_accuracy, get_model, load_images
    from devicefit.study.policy_search import iterative_compress

    dataset, shape, lr, augment, clip = ITERATIVE[model_name]
    model = (train_mnist_model(model_name, RESULTS_DIR / ".models" / f"{model_name}.pt", progress=False)
             if dataset == "mnist" else get_model(model_name, pretrained=True).eval())
    test = load_images(dataset, "test2k" if dataset == "mnist" else "test")
    example = torch.zeros(1, *shape)
    rows = [{"label": "original", "params": compressed_cost(model, example)["params"],
             "accuracy": evaluate_accuracy(model, test)}]
    settings = ((1, 3 * epochs), (3, epochs), (3, 3 * epochs))[:3 if same_per_round else 2]
    for rounds, per_round in settings:  # same total epochs, same epochs per round
        label = f"{rounds} round(s) of {per_round:g} epoch(s)"
        tag = f"{model_name}-iterative-{rounds}x{per_round:g}-merge" + ("" if search == "greedy" else f"-{search}")
        cached = RUNS / f"{tag}.json"
        if cached.exists():  # the row of the run that computed it (its wall time included)
            rows.append(json.loads(cached.read_text()))
            continue
        start = time.perf_counter()
        cfg = FinetuneConfig(epochs=per_round, lr=lr, augment=augment, distill=True, clip_grad_norm=clip)
        try:
            r = iterative_compress(model, example, rounds=rounds, fraction=0.2, method="lowrank", metric="params",
                                   search=search, evaluations=evaluations, store=RUNS / f"{tag}.sqlite",
                                   dataset=dataset, images=1000, recovery=cfg,
                                   checkpoint_dir=RUNS / tag, progress=False)
        except Exception as exc:  # one shot may not reach the target at all: say so
            rows.append({"label": label, "error": str(exc)})
            continue
        rows.append({"label": label, "params": r.rounds[-1]["cost"]["params"],
                     "accuracy": evaluate_accuracy(r.model, test), "wall_s": time.perf_counter() - start,
                     "rounds": [{"round": x["round"], "params": x["cost"]["params"]} for x in r.rounds]})
        cached.write_text(json.dumps(rows[-1]))
        print(model_name, rows[-1], flush=True)
    return rows


def search_rows(model_name: str, macs: float, evaluations: int, images: int, epochs: float) -> list[dict[str, Any]]:
    import devicefit
    from devicefit.models import get_model
    from devicefit.study import search_policy

    model = get_model(model_name, pretrained=True).eval()
    example = torch.zeros(1, 3, 32, 32)
    rows = []
    for search in SEARCHES:
        folder = RUNS / f"{model_name}-channel-{macs}-{search}"
        row_file = folder / "row.json"
        if row_file.exists():
            rows.append(json.loads(row_file.read_text()))
            continue
        start = time.perf_counter()
        found = search_policy(model, example, method="channel", metric="macs", fraction=macs, search=search,
                              evaluations=evaluations, store=RUNS / f"{model_name}-channel-{macs}.sqlite",
                              images=images, model_name=model_name, progress=False)
        search_s = time.perf_counter() - start
        row = {"label": search, "estimate": found.accuracy, "evaluations": found.evaluations, "search_s": search_s,
               "searched": found.to_dict()}
        if epochs:
            report = devicefit.compress(model_name, method="channel", policy=found.policy, search=found.to_dict(),
                                        finetune_epochs=epochs, distill=True, out=folder, progress=False)
            row["report"] = report.to_dict()
        row["wall_s"] = time.perf_counter() - start
        folder.mkdir(parents=True, exist_ok=True)
        row_file.write_text(json.dumps(row, indent=1))
        rows.append(row)
        print(model_name, search, found.accuracy, found.cost, flush=True)
    target = int(rows[0]["searched"]["limit"])  # the searches' budget: macs x the original's
    folder = RUNS / f"{model_name}-channel-{macs}-uniform-equal"
    row_file = folder / "row.json"
    if row_file.exists():
        rows.append(json.loads(row_file.read_text()))
    elif epochs:
        start = time.perf_counter()
        ratio = uniform_within(model, example, target)
        report = devicefit.compress(model_name, method="channel", ratio=ratio, finetune_epochs=epochs,
                                    distill=True, out=folder, progress=False)
        row = {"label": f"uniform {ratio:.4f}", "report": report.to_dict(), "wall_s": time.perf_counter() - start}
        row_file.write_text(json.dumps(row, indent=1))
        rows.append(row)
    if epochs:  # the peer: Torch-Pruning's global magnitude pruner at the same MACs, the same recovery
        from compress_cifar_resnet import peer

        r = peer(model_name, target, epochs)
        rows.append({"label": "Torch-Pruning global", "wall_s": r["wall_s"],
                     "report": {"accuracy": r["accuracy"], "cost": r["cost"], "speedup": r["speedup"]}})
    return rows


def _macs(model: torch.nn.Module, example: torch.Tensor) -> int:
    from devicefit.compression import compressed_cost

    return int(compressed_cost(model, example)["macs"])


def uniform_within(model: torch.nn.Module, example: torch.Tensor, target: int) -> float:
    """The largest uniform keep ratio (to 1/1024) whose channel-pruned model has at most ``target`` MACs: the
    uniform baseline at the searched policies' budget, not at the policy grid's next step below it."""
    from devicefit.compression import Policy, apply_policy
    from devicefit.compression.job import method_action

    def macs_at(r: float) -> int:
        return _macs(apply_policy(model, Policy.uniform(model, method_action("channel", r)), example).model, example)

    if macs_at(1 / 1024) > target:
        raise ValueError(f"no uniform keep ratio reaches {target:,} MACs")
    return bisect_boundary(lambda r: macs_at(r) <= target, 1 / 1024, 1.0, 10)  # 10 halvings: within 1/1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet20,resnet56", help="models of the policy searches, comma separated")
    ap.add_argument("--macs", type=float, default=0.5)
    ap.add_argument("--evaluations", type=int, default=60)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--epochs", type=float, default=0.5)
    ap.add_argument("--rnn-epochs", type=float, default=1.0)
    ap.add_argument("--iterative", default="lstm,resnet56", help="models of the iterative rows (lstm, resnet56)")
    ap.add_argument("--cnn-epochs", type=float, default=0.25, help="epochs per iterative round of a CIFAR model")
    ap.add_argument("--cnn-search", default="rl", help="policy search of a CIFAR model's iterative rounds "
                    "(greedy estimates every layer at every ratio: 385 a round for ResNet-56)")
    ap.add_argument("--cnn-same-per-round", action=argparse.BooleanOptionalAction, default=False,
                    help="also the CIFAR model's 3 rounds of 3 x --cnn-epochs each")
    args = ap.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"settings": vars(args)}
    data["iterative"] = {}
    for m in [x for x in args.iterative.split(",") if x]:
        data["iterative"][m] = (iterative_rows(m, args.rnn_epochs) if m == "lstm" else
                                iterative_rows(m, args.cnn_epochs, args.cnn_search, args.evaluations,
                                               args.cnn_same_per_round))
        _write(data, args)
    _write(data, args)
    data["search"] = {}
    for m in [x for x in args.model.split(",") if x]:
        data["search"][m] = search_rows(m, args.macs, args.evaluations, args.images, args.epochs)
        _write(data, args)


def _write(data: dict[str, Any], args: argparse.Namespace) -> None:
    lines = []
    for m, rows in data["iterative"].items():
        dataset = ITERATIVE[m][0]
        where = ("trained on MNIST train8k (the first 8,000 images of the official MNIST test set), tested on test2k "
                 "(the other 2,000)" if dataset == "mnist" else "pretrained, tested on the 10,000 CIFAR-10 JPEG test "
                 "images; policies scored on 1,000 training images")
        lines += [f"## Iterative against one-shot low rank: {m} to 5x fewer parameters", "",
                  f"{m} {where}. "
                  + ("Greedy policy search" if m == "lstm" or args.cnn_search == "greedy" else
                     f"{SEARCH_NAMES.get(args.cnn_search, args.cnn_search)} policy search ({args.evaluations} "
                     "estimates a round; greedy would estimate every layer at every ratio, 385 a round)")
                  + ", each round recovered with distillation"
                  + (" (gradient norm clipped at 5)" if ITERATIVE[m][4] else "") + "; before each later round the "
                  "factorised matrices are multiplied back (merge_factorized), so each round truncates every matrix "
                  "afresh, at a fraction of its current rank, instead of factorising the factors. One shot: 1 round; "
                  "iterative: 3 rounds (budgets 0.2^(1/3), 0.2^(2/3), 0.2 of the original's parameters; a round "
                  "whose model already meets its budget is skipped), with the same total epochs or the same epochs "
                  "per round.", "",
                  markdown_table(["run", "params", "top-1 %", "per round", "wall s"],
                                 [[r["label"], r.get("params"), r.get("accuracy"),
                                   r.get("error") or ", ".join(f"{x['params']:,}" for x in r.get("rounds", [])),
                                   r.get("wall_s")] for r in rows]), ""]
    for model_name, found in data.get("search", {}).items():
        rows = []
        for r in found:
            rep = r.get("report") or {}
            o, c = (rep.get("cost") or {}).get("original"), (rep.get("cost") or {}).get("compressed")
            rows.append([r["label"], r.get("estimate"), r.get("evaluations"), r.get("search_s"),
                         (rep.get("accuracy") or {}).get("recovered"), o["macs"] / c["macs"] if o and c else None,
                         rep.get("speedup"), r.get("wall_s")])
        lines += [f"## Channel policies of {model_name} at {args.macs} of its MACs", "",
                  f"Searches of {args.evaluations} accuracy estimates ({args.images} CIFAR-10 training images, "
                  "no fine-tuning, BatchNorm re-calibrated; greedy estimates every decision at every ratio, however "
                  "many that is); every policy then recovered with "
                  f"{args.epochs} epoch(s) of distillation and tested on the 10,000 test images (JPEG). The uniform "
                  "row is the largest uniform keep ratio (to 1/1024) within the same MACs; Torch-Pruning's "
                  "global magnitude pruner (L1 groups, classifier kept) is bisected to the same MACs and "
                  "recovered the same way. Search s: wall time of the process that finished the search (a resumed "
                  "search counts what it had left: ResNet-56's greedy resumed after 127 of its 182 estimates, "
                  "about 4.6 s each). All figures from this machine (no GPU).", "",
                  markdown_table(["policy", "estimate % (no fine-tuning)", "evaluations", "search s",
                                  "recovered top-1 %", "MACs reduction x", "ONNX Runtime speed-up x", "wall s"],
                                 rows), ""]
    write_results(NAME, "AutoML compression", "\n".join(lines), data)


if __name__ == "__main__":
    main()
