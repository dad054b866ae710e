"""A user's model file, loaded safely: TorchScript, ``torch.export`` programs, state dicts, and (only when
trusted) full pickled modules; and a check that a model accepts a given input shape.

Formats are told apart by content, never by file name (:func:`model_file_kind`):

``"torchscript"``  (``torch.jit.save``; a zip with ``code/`` and ``constants.pkl``)
    Loaded with ``torch.jit.load``: the archive holds TorchScript code and tensors, and no pickled Python
    object is rebuilt, so no trust is needed. Measured (torch 2.13): forward, parameter gradients,
    ``copy.deepcopy``, ``.double()`` and train()/eval() work; counting and latency measurement (both
    runtimes) work. It cannot do what the zero-cost proxies need beyond that: ``register_forward_hook``
    raises on a ScriptModule and on its submodules; the submodules are ``RecursiveScriptModule``, not
    ``nn.Conv2d``/``nn.Linear``/``nn.ReLU``, so no layer is found to score; a submodule cannot be replaced by
    ``nn.Identity`` (synflow's BatchNorm-free copy); a *traced* module keeps the BatchNorm/dropout mode it
    was traced in whatever train()/eval() says. See :func:`proxy_limitation`.
``"exported_program"``  (``torch.export.save``, usually ``.pt2``; a zip with ``archive_format`` or
    ``serialized_exported_program.json``)
    Loaded with ``torch.export.load(path).module()`` (a ``torch.fx.GraphModule``; no trust needed).
    Forward, parameter gradients and deepcopy work; counting and latency measurement work (via
    :func:`devicefit.hardware.eval_mode`). Its train()/eval() raise ``NotImplementedError`` (the mode is fixed
    in the graph at export); its submodules only hold parameters (the graph calls ATen operators directly),
    so forward hooks on them never fire; input shapes are those of the export unless dynamic dimensions
    were declared (another batch size fails a guard with ``AssertionError``).
``"state_dict"``  (``torch.save(model.state_dict())``, zip or legacy format)
    Read with ``torch.load(weights_only=True)`` (tensors and containers only; no code runs), then loaded
    with ``load_state_dict(strict=True)`` into ``architecture``: an ``nn.Module`` instance (filled in place)
    or a ``"package.module:factory"`` string, imported and called with no arguments. What is unwrapped,
    exactly: (1) when the file holds a dict that is not itself a mapping of names to tensors, the value of
    the first of the keys ``"state_dict"``, ``"model_state_dict"``, ``"model"`` that is one (other entries,
    such as ``best_prec1`` or an optimizer state, are ignored); (2) a key prefix ``"module."``
    (``nn.DataParallel``/DDP) or ``"_orig_mod."`` (``torch.compile``), repeatedly, while every key has it
    and the architecture's keys do not. BatchNorm ``num_batches_tracked`` entries missing from
    checkpoints written before PyTorch 0.4.1 are filled in by PyTorch, as ``load_state_dict`` does.
``"full_pickle"``  (``torch.save(model)``, or any pickle that names Python classes or functions)
    Refused unless ``trust=True``: unpickling imports and calls whatever the file names, so a malicious
    file runs arbitrary code (``os.system``...) the moment it is loaded. With trust it is read with
    ``torch.load(weights_only=False)`` (the module's class must be importable); a trusted pickle that
    holds a dict is treated as a state dict.

Models are returned as stored (dtype and device ``cpu``); nothing converts them to float32.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import pickletools
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from ..errors import InputError
from ..hardware.counting import eval_mode, float_dtype

__all__ = [
    "MODEL_FILE_KINDS",
    "STATE_DICT_KEYS",
    "check_model_input",
    "load_model_file",
    "model_file_kind",
    "proxy_limitation",
]

MODEL_FILE_KINDS: tuple[str, ...] = ("torchscript", "exported_program", "state_dict", "full_pickle")
#: Keys of a checkpoint dict under which a state dict is looked for, in this order.
STATE_DICT_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model")
_PREFIXES = ("module.", "_orig_mod.")
_SHOW = 5  # how many keys an error message lists
_TRUST_HOW = "pass trust=True in the API or --trust-model-file on the command line"

_PROXY_LIMITS = {
    "torchscript": (
        "a TorchScript module's layers are RecursiveScriptModules, not nn.Conv2d/nn.Linear/nn.ReLU, so there is "
        "no layer to score; forward hooks are not supported on ScriptModules (fisher, nwot) and submodules "
        "cannot be replaced (synflow's BatchNorm-free copy); only params, flops and jacob_cov can be computed. "
        "Save the nn.Module's state_dict and load it with its architecture instead"
    ),
    "exported_program": (
        "a torch.export program's train()/eval() raise NotImplementedError (its mode is fixed at export), its "
        "submodules only hold parameters (forward hooks never fire, no Conv/Linear layer to score) and its "
        "input shapes are fixed at export; only params can be computed (and FLOPs counted with "
        "devicefit.hardware.count_model). Save the nn.Module's state_dict and load it with its architecture instead"
    ),
}


def proxy_limitation(kind: str) -> str | None:
    """Why the zero-cost proxies cannot fully score a model of file ``kind`` (measured, see the module
    docstring), or ``None`` when they can (``state_dict``, ``full_pickle``: plain ``nn.Module`` s)."""
    if kind not in MODEL_FILE_KINDS:
        raise InputError(f"model file kind {kind!r} is not one of {', '.join(MODEL_FILE_KINDS)}")
    return _PROXY_LIMITS.get(kind)


# ---------------------------------------------------------------------------------------------- sniffing


def _check_path(path: str | os.PathLike[str]) -> Path:
    p = Path(os.fspath(path))
    if not p.exists():
        raise InputError(f"model file {str(p)!r} not found")
    if not p.is_file():
        raise InputError(f"model file {str(p)!r} is not a file (a directory?); expected a file written by "
                         "torch.save, torch.jit.save or torch.export.save")
    if p.stat().st_size == 0:
        raise InputError(f"model file {str(p)!r} is empty; expected a file written by torch.save, torch.jit.save "
                         "or torch.export.save")
    return p


def _not_a_model(path: Path, detail: str) -> InputError:
    return InputError(f"model file {str(path)!r} {detail}; expected a PyTorch model file written by torch.save "
                      "(a state dict or a module), torch.jit.save or torch.export.save")


def _layout(path: Path) -> str:
    """``torchscript``, ``exported_program``, ``pickle_zip`` or ``pickle_legacy``, from the bytes alone."""
    with path.open("rb") as f:
        head = f.read(4)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise _not_a_model(path, f"is a corrupt zip archive ({exc})") from None
        rel = {n.split("/", 1)[1] for n in names if "/" in n}
        if "archive_format" in rel or "serialized_exported_program.json" in rel or "models/model.json" in rel:
            return "exported_program"
        if "constants.pkl" in rel and any(r.startswith("code/") for r in rel):
            return "torchscript"
        if "data.pkl" in rel:
            return "pickle_zip"
        raise _not_a_model(path, "is a zip archive without a PyTorch pickle (data.pkl) or TorchScript code")
    if head.startswith(b"PK"):
        raise _not_a_model(path, "is a truncated or corrupt zip archive")
    if head[:1] == b"\x80":  # pickle PROTO opcode: the legacy (pre-1.6) torch.save format or a plain pickle
        return "pickle_legacy"
    if _looks_like_onnx(path):
        raise _not_a_model(path, "is an ONNX model (measure it directly with devicefit.hardware.measure_latency)")
    raise _not_a_model(path, "is neither a zip archive nor a pickle")


def _looks_like_onnx(path: Path) -> bool:
    try:
        import onnx

        proto = onnx.load_model_from_string(path.read_bytes())
    except Exception:  # protobuf decode errors; anything else means "no"
        return False
    return proto.ir_version > 0 and len(proto.graph.node) > 0


def _pickle_globals(path: Path, layout: str) -> list[str]:
    """The Python objects (``module.name``) a torch pickle would import, read without unpickling; a
    malformed pickle raises :class:`InputError`."""
    if layout == "pickle_zip":
        with zipfile.ZipFile(path) as z:
            member = next(n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            data = z.read(member)
        stream: Any = io.BytesIO(data)
        size, count = len(data), 1
    else:
        stream = path.open("rb")
        size, count = path.stat().st_size, 4  # legacy format: magic number, protocol, system info, object
    found: list[str] = []
    with stream:
        try:
            for _ in range(count):
                if stream.tell() >= size:  # a plain pickle holds one object, not four
                    break
                _scan_pickle(stream, found)
        except Exception as exc:  # pickletools raises ValueError and others on malformed data
            raise _not_a_model(path, f"holds a malformed pickle ({type(exc).__name__}: {exc})") from None
    return found


def _beyond_weights(names: list[str]) -> list[str]:
    """``names`` without those ``torch.load(weights_only=True)`` allows (tensors, containers), each once."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals()) | {"__builtin__.set"}  # the protocol-2 spelling of builtins.set
    except Exception:  # a private torch helper: without it, list every name
        allowed = set()
    return list(dict.fromkeys(n for n in names if n not in allowed))


def _scan_pickle(stream: Any, found: list[str]) -> None:
    strings: list[Any] = []  # values pushed by string opcodes (and memo reads of them)
    memo: dict[int, Any] = {}
    for opcode, arg, _pos in pickletools.genops(stream):
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            found.append(str(arg).replace(" ", "."))
        elif "UNICODE" in name or "STRING" in name:
            strings.append(arg)
        elif name == "MEMOIZE":
            memo[len(memo)] = strings[-1] if strings else None
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = strings[-1] if strings else None
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            strings.append(memo.get(int(arg)))
        elif name == "STACK_GLOBAL" and len(strings) >= 2:
            found.append(f"{strings[-2]}.{strings[-1]}")
        if name == "STOP":
            return


# ---------------------------------------------------------------------------------------------- state dicts


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a loaded object: itself, or under one of :data:`STATE_DICT_KEYS`."""
    if _is_state_dict(obj):
        return obj  # type: ignore[return-value]
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            if _is_state_dict(obj.get(key)):
                return obj[key]
        keys = ", ".join(repr(k) for k in list(obj)[:_SHOW])
        raise InputError(
            f"model file {str(path)!r} holds a dict (keys {keys}{', ...' if len(obj) > _SHOW else ''}) that is "
            f"neither a state dict (parameter names -> tensors) nor a checkpoint with one under "
            f"{', '.join(map(repr, STATE_DICT_KEYS))}"
        )
    raise InputError(f"model file {str(path)!r} holds a {type(obj).__name__}; expected a state dict or an nn.Module")


def _build_architecture(architecture: str | nn.Module | None, path: Path, n_tensors: int) -> nn.Module:
    if architecture is None:
        raise InputError(
            f"model file {str(path)!r} holds a state dict ({n_tensors} tensors) but no architecture; pass "
            "architecture='package.module:factory' (called with no arguments) or an nn.Module instance in the API, "
            "--architecture package.module:factory on the command line"
        )
    if isinstance(architecture, nn.Module):
        return architecture
    return build_from_factory(architecture)


def build_from_factory(architecture: str) -> nn.Module:
    """The model that ``package.module:factory`` builds, the factory called with no arguments; every way it can
    fail (a malformed spec, an import error, a missing attribute, a failing factory, no ``nn.Module``) is an
    :class:`InputError` naming the spec."""
    if not isinstance(architecture, str) or architecture.count(":") != 1:
        raise InputError(f"architecture must be an nn.Module or a 'package.module:factory' string, got "
                         f"{architecture!r}")
    module_name, factory_name = architecture.split(":")
    if not module_name or not factory_name:
        raise InputError(f"architecture {architecture!r} must look like 'package.module:factory'")
    try:
        factory: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise InputError(f"architecture {architecture!r}: module {module_name!r} could not be imported "
                         f"({type(exc).__name__}: {exc})") from exc
    for part in factory_name.split("."):
        if not hasattr(factory, part):
            raise InputError(f"architecture {architecture!r}: {module_name!r} has no attribute {factory_name!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise InputError(f"architecture {architecture!r} is not callable")
    try:
        model = factory()
    except Exception as exc:
        raise InputError(f"architecture {architecture!r} failed when called with no arguments "
                         f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(model, nn.Module):
        raise InputError(f"architecture {architecture!r} returned a {type(model).__name__}, expected an nn.Module")
    return model


def _first(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return f"{len(items)} ({shown}{', ...' if len(items) > _SHOW else ''})"


def _load_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> nn.Module:
    metadata = getattr(state, "_metadata", None)
    state = OrderedDict(state)  # a copy: prefixes are removed in place below
    if metadata is not None:
        state._metadata = metadata  # type: ignore[attr-defined]  # per-module versions, used by BatchNorm
    expected = model.state_dict()
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state) and not all(k.startswith(prefix) for k in expected):
                consume_prefix_in_state_dict_if_present(state, prefix)
                changed = True
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        parts = [f"{what} {_first(items)}" for what, items in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
                 if items]
        raise InputError(f"the state dict in {str(path)!r} does not fit the architecture "
                         f"{type(model).__name__}: {'; '.join(parts)}")
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise InputError(f"the state dict in {str(path)!r} does not fit the architecture {type(model).__name__}: "
                         f"{exc}") from exc
    return model


# ---------------------------------------------------------------------------------------------- public API


def _identify(path: Path) -> tuple[str, Any]:
    """The kind of the file and, for a state dict, what ``torch.load(weights_only=True)`` read."""
    layout = _layout(path)
    if layout in ("torchscript", "exported_program"):
        return layout, None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights-only refused a global: a full pickle, or malformed
        return "full_pickle", _pickle_globals(path, layout)  # raises on a malformed pickle
    except Exception as exc:  # truncated archives, bad magic numbers, ...
        raise _not_a_model(path, f"could not be read ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, Mapping):
        return "state_dict", _as_state_dict(obj, path)
    raise InputError(f"model file {str(path)!r} holds a {type(obj).__name__}; expected a state dict or a module")


def model_file_kind(path: str | os.PathLike[str]) -> str:
    """The kind of a model file (one of :data:`MODEL_FILE_KINDS`), from its content, without running code
    from it: ``torchscript``, ``exported_program``, ``state_dict`` (also inside a checkpoint dict) or
    ``full_pickle`` (needs ``trust=True`` to load). A file that is none of these raises :class:`InputError`.
    """
    return _identify(_check_path(path))[0]


def load_model_file(
    path: str | os.PathLike[str],
    *,
    trust: bool = False,
    architecture: str | nn.Module | None = None,
) -> nn.Module:
    """The ``nn.Module`` stored in ``path`` (see the module docstring for the formats and what each allows).

    ``architecture`` is needed for a state dict: an ``nn.Module`` (loaded in place and returned) or a
    ``"package.module:factory"`` string. ``trust=True`` allows a full pickle, whose loading runs code named
    in the file. Bad input (missing file, directory, empty or corrupt file, a pickle without trust, a state
    dict that does not fit, an object that is not a module) raises :class:`InputError` naming the path.
    """
    p = _check_path(path)
    kind, info = _identify(p)
    if kind == "torchscript":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated; still read
                return torch.jit.load(str(p), map_location="cpu")
        except Exception as exc:
            raise _not_a_model(p, f"could not be loaded as TorchScript ({type(exc).__name__}: {exc})") from None
    if kind == "exported_program":
        try:
            return torch.export.load(str(p)).module()
        except Exception as exc:
            raise _not_a_model(p, f"could not be loaded as a torch.export program ({type(exc).__name__}: "
                                  f"{exc})") from None
    if kind == "state_dict":
        return _load_state_dict(_build_architecture(architecture, p, len(info)), info, p)
    if not trust:
        names = _beyond_weights(info)
        shown = ", ".join(names[:_SHOW]) + (", ..." if len(names) > _SHOW else "")
        raise InputError(
            f"model file {str(p)!r} is a full pickle: loading it would import and call Python objects named in "
            f"the file ({shown or 'not tensors or containers'}), which can run any code, so it is refused. If you "
            f"trust the file, {_TRUST_HOW}; better, save model.state_dict() and load it with architecture=, or "
            "save with torch.jit.save / torch.export.save"
        )
    try:
        obj = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # missing classes, corrupt data: anything the pickle raises
        raise InputError(f"model file {str(p)!r} could not be unpickled even with trust ({type(exc).__name__}: "
                         f"{exc}); the model's class must be importable") from None
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, Mapping):
        state = _as_state_dict(obj, p)
        return _load_state_dict(_build_architecture(architecture, p, len(state)), state, p)
    raise InputError(f"model file {str(p)!r} holds a {type(obj).__name__}; expected an nn.Module or a state dict")


def check_model_input(
    model: nn.Module, input_shape: Sequence[int], *, batch: int = 2, expect_logits: bool = False
) -> torch.Tensor:
    """Run ``model`` once, in eval mode and without gradients, on a fixed random batch of ``batch`` samples
    of ``input_shape`` (one sample, no batch dimension) in the model's floating dtype; return the output.

    Whatever the forward raises becomes an :class:`InputError` naming the shape and the model's message.
    With ``expect_logits``, the output must be a ``(batch, classes)`` tensor. Modes are restored.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InputError(f"batch must be a positive integer, got {batch!r}")
    try:
        sample = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise InputError(f"input_shape must be a sequence of positive integers like (3, 32, 32), got "
                         f"{input_shape!r}") from None
    if not sample or any(s < 1 for s in sample):
        raise InputError(f"input_shape must be positive sizes like (3, 32, 32), got {tuple(input_shape)}")
    shape = (batch, *sample)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(float_dtype(model))
    try:
        with eval_mode(model), torch.no_grad():
            out = model(x)
    except Exception as exc:
        raise InputError(f"the model does not accept inputs of shape {shape} (batch {batch} of input_shape "
                         f"{sample}): {type(exc).__name__}: {exc}") from exc
    if expect_logits and not (isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == batch):
        got = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        raise InputError(f"the model must return logits of shape ({batch}, classes) for inputs of shape {shape}; "
                         f"it returned {got}")
    return out
