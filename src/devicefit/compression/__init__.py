"""Compression of a trained model: per-layer policies, transforms, recovery training, int8, export.

A **policy** is plain data: layer name -> action (``LowRank``, ``ChannelPrune``, ``Unstructured``, ``Block``,
``Pattern``, ``Int8``, ``WeightBits``, ``Keep``), frozen dataclasses that round-trip through JSON; a layer is a
module name or one LSTM/GRU matrix (``rnn.weight_hh_l0``). ``apply_policy(model,
policy, example_input)`` returns the compressed model, a replayable history and its exact cost; each
transform is one file that registers the action it implements. Masks are ``torch.nn.utils.prune`` masks, so
they are kept through training by construction and ``finalize`` bakes them.

The package is ``compression`` so that ``devicefit.compress`` can be the verb (:func:`~.job.compress`), as
``devicefit.search`` is beside the ``strategies`` package. Names are imported on first use: ``import
devicefit.compression`` does not import torch.
"""

from __future__ import annotations

from devicefit._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    # policy.py: the actions and the policy type
    "Action": "policy",
    "Block": "policy",
    "ChannelPrune": "policy",
    "Int8": "policy",
    "Keep": "policy",
    "LowRank": "policy",
    "Pattern": "policy",
    "Unstructured": "policy",
    "WeightBits": "policy",
    "Policy": "policy",
    # analysis.py: compressible layers, their share of MACs and params, coupled channel groups
    "LayerInfo": "analysis",
    "analyze_layers": "analysis",
    "ChannelScatter": "analysis",
    # bn.py
    "recalibrate_batchnorm": "bn",
    # apply.py: the one way to apply a policy
    "CompressionResult": "apply",
    "apply_policy": "apply",
    "compressed_cost": "apply",
    "finalize": "apply",
    "register_transform": "registry",
    "replay_history": "apply",
    # job.py: the verb, one method at a uniform ratio, recovered and measured
    "CompressReport": "job",
    "METHODS": "job",
    "compress": "job",
    "method_action": "job",
    # train.py: recovery training (fine-tuning, distillation), resumable
    "FinetuneConfig": "train",
    "FinetuneHistory": "train",
    "TrainingHook": "train",
    "distillation_loss": "train",
    "finetune": "train",
    "train_mnist_model": "train",
    # admm.py: training-time pruning, as training hooks
    "AdmmPruning": "admm",
    "ReweightedGroupLasso": "admm",
    # int8.py: post-training int8 (onnxruntime QDQ) and fake-quant estimates
    "Int8Config": "int8",
    "fake_quantize": "int8",
    "quantize_onnx_int8": "int8",
    # export.py: ONNX export of a compressed model, measured against the original
    "Comparison": "export",
    "TimingProtocol": "export",
    "compare_models": "export",
    "compressed_onnx": "export",
    "export_compressed": "export",
    # distill.py: distillation on synthetic data (no training data shared)
    "bn_statistics_loss": "distill",
    "synthetic_images": "distill",
    # energy_prune.py: energy-constrained pruning (weighted sparse projection, arXiv 1806.04321)
    "EnergyProjection": "energy_prune",
    "prune_to_energy": "energy_prune",
    "weighted_sparse_projection": "energy_prune",
    # joint.py: joint pruning and quantization to a target size (ADMM with exact knapsack projections)
    "JointSparseQuantization": "joint",
    "compress_to_size": "joint",
    "knapsack_01": "knapsack",
    "multiple_choice_knapsack": "knapsack",
    # omni.py: omni-sparsity, one model whose nested sparse sub-models all work (arXiv 2110.08352)
    "OmniSparsity": "omni",
    "pick_sub_models": "omni",
    "sub_model": "omni",
    # policy_space.py: the per-layer policy space of one model (what AutoML compression searches)
    "PolicySpace": "policy_space",
    # the transforms, one file each
    "svd_factors": "lowrank",
    "LowRankRNN": "lowrank",
    "unstructured_mask": "masks",
    "block_mask": "masks",
    "pattern_library": "masks",
    "pattern_mask": "masks",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
