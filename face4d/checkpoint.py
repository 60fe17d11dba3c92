"""Model directories and training state on disk: safetensors for tensors, JSON for the rest.

Layout of a model directory (the ``--out`` of every ``face4d train`` command)::

    config.json          format, model kind, model config, normaliser, and the caller's extras
                         (training config, step, diffusion schedule, ...)
    model.safetensors    the weights to run: the EMA weights when written by the trainer
    last.safetensors     training state: raw weights, EMA, optimiser tensors
    last.json            the rest of the training state: step, optimiser skeleton, run fingerprint

Nothing is pickled (``torch.save``/``torch.load`` would run arbitrary code from a downloaded
checkpoint). Every file is written through ``atomic_file``, so a crash leaves either the old or the
new file, never half of one. The two files of a pair are written one after the other; a training
state records its step in both, so a pair torn by a crash between the two writes is detected.
A model is rebuilt from its config by a *builder*, ``(ConfigCls, ModelCls)`` with
``ConfigCls.from_dict(dict)`` and ``ModelCls(config)``, chosen by the kind stored in config.json.
``MODEL_KINDS`` is the one registry of the kinds face4d writes, the mesh decoders included (they
are built with their mesh topology, by ``face4d.decoder.retarget.load_decoder``); a new model type
is one entry there. A *bundle* is a directory of model directories: ``denoiser/`` and the
noise-aware classifiers ``classifier_I/`` and ``classifier_S/``; a text guide (kind ``text_guide``)
serves text control. The default bundle ships inside the package (``face4d/weights/default``, with
the mesh decoder in ``decoder/``), so generation works offline right after install.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from face4d.data.normalize import LandmarkNormalizer
from face4d.decoder.model import DECODER_KINDS
from face4d.errors import Face4DError
from face4d.jsonfile import read_json, write_json
from face4d.models import (Classifier, ClassifierConfig, Denoiser, DenoiserConfig, ICConfig, IndependentClassifier,
                           TextGuide, TextGuideConfig)
from meshops.atomic import atomic_file

FORMAT = "face4d-model"
FORMAT_VERSION = 1
STATE_FORMAT = "face4d-train-state"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_TENSORS_FILE = "last.safetensors"
STATE_FILE = "last.json"
_RESERVED = ("format", "version", "kind", "model_config", "normalizer")

Builders = Mapping[str, tuple[type, type]]
"""Model kind -> ``(ConfigCls, ModelCls)``: ``ModelCls(ConfigCls.from_dict(model_config))``."""

MODEL_KINDS: dict[str, tuple[type, type]] = {
    "denoiser": (DenoiserConfig, Denoiser),
    "classifier": (ClassifierConfig, Classifier),
    "ic": (ICConfig, IndependentClassifier),
    "text_guide": (TextGuideConfig, TextGuide),
    **DECODER_KINDS,
}
"""Every kind of model directory: the landmark models, the evaluation's IC and the mesh decoders."""


# ------------------------------------------------------------------------------------ files

def write_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors, atomically. Tensors are copied to the CPU first, which also
    unties shared storage (tied weights), which safetensors refuses."""
    cpu = {name: tensor.detach().cpu().clone().contiguous() for name, tensor in tensors.items()}
    with atomic_file(path, overwrite=True) as tmp:
        save_file(cpu, str(tmp), metadata=metadata)


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (on the CPU) and metadata of a safetensors file; a truncated or corrupt file is a
    one-line error naming the file, not the library's bare deserialisation message."""
    if not path.is_file():
        raise Face4DError(f"{path}: no such file")
    try:
        with safe_open(path, framework="pt") as fh:
            return {name: fh.get_tensor(name) for name in fh.keys()}, fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise Face4DError(f"{path}: truncated or corrupt safetensors file ({exc})") from None


# ------------------------------------------------------------------------------------ checks

def check_state_dict(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], source: str) -> None:
    """Fail with the names of missing and unexpected tensors and of shape mismatches, so a
    checkpoint that does not fit its config says why instead of raising torch's multi-line error."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [f"{name} {tuple(found[name].shape)} != {tuple(expected[name].shape)}"
              for name in sorted(set(expected) & set(found)) if found[name].shape != expected[name].shape]
    problems = [f"{label}: {', '.join(_abbreviate(items))}" for label, items in
                (("missing", missing), ("unexpected", unexpected), ("shape mismatch (stored != config)", shapes))
                if items]
    if problems:
        raise Face4DError(f"{source}: weights do not match the model config; " + "; ".join(problems))


def _abbreviate(items: list[str], limit: int = 5) -> list[str]:
    return items if len(items) <= limit else items[:limit] + [f"... ({len(items) - limit} more)"]


# ------------------------------------------------------------------------------- model dirs

def save_model(
    directory: str | os.PathLike,
    model: torch.nn.Module,
    kind: str,
    model_config: dict[str, Any],
    normalizer: LandmarkNormalizer | None,
    extra: dict[str, Any] | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model`` as a model directory, replacing an earlier save (checkpoints are overwritten
    on purpose). ``extra`` is merged into config.json (``training``, ``step``, schedule, ...);
    ``state_dict`` replaces the model's own weights, e.g. by their EMA."""
    directory = Path(directory)
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(_RESERVED))
    if clash:
        raise ValueError(f"extra keys {clash} are reserved in {CONFIG_FILE}")
    directory.mkdir(parents=True, exist_ok=True)
    write_tensors(directory / WEIGHTS_FILE, model.state_dict() if state_dict is None else state_dict)
    write_json(directory / CONFIG_FILE, {
        "format": FORMAT, "version": FORMAT_VERSION, "kind": kind, "model_config": model_config,
        "normalizer": None if normalizer is None else normalizer.to_dict(), **extra,
    })
    return directory


def read_model_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The config.json of a model directory, checked for format and version."""
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise Face4DError(f"{directory}: not a face4d model directory (no {CONFIG_FILE}); "
                          f"train one with 'face4d train'")
    config = read_json(path)
    if config.get("format") != FORMAT or config.get("version") != FORMAT_VERSION:
        raise Face4DError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} config")
    for key in ("kind", "model_config"):
        if key not in config:
            raise Face4DError(f"{path}: no {key!r} entry")
    return config


def read_builder(directory: str | os.PathLike, builders: Builders) -> tuple[dict[str, Any], type, type]:
    """The config.json of a model directory and the ``(ConfigCls, ModelCls)`` of its kind, which must
    be one of ``builders`` (an error listing them otherwise)."""
    config = read_model_config(directory)
    kind = config["kind"]
    if kind not in builders:
        raise Face4DError(f"{directory}: model kind {kind!r} cannot be loaded here; expected one of {sorted(builders)}")
    return (config, *builders[kind])


def load_model(
    directory: str | os.PathLike, builders: Builders, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any], LandmarkNormalizer | None]:
    """Rebuild the model of a model directory: ``(model in eval mode on device, config.json as a
    dict, normaliser or None)``. ``builders`` names the kinds the caller can use; any other kind
    is an error listing them."""
    directory = Path(directory)
    config, config_cls, model_cls = read_builder(directory, builders)
    try:
        model = model_cls(config_cls.from_dict(config["model_config"]))
        normalizer = None if config.get("normalizer") is None else LandmarkNormalizer.from_dict(config["normalizer"])
    except (Face4DError, TypeError, KeyError) as exc:
        raise Face4DError(f"{directory / CONFIG_FILE}: invalid config ({exc})") from None
    return load_weights(model, directory, device), config, normalizer


def default_bundle() -> Path:
    """The bundle shipped with the package."""
    return Path(str(resources.files("face4d") / "weights" / "default"))


def load_pretrained(directory: str | os.PathLike, kind: str,
                    device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict, LandmarkNormalizer | None]:
    """Load a model directory that must hold a model of ``kind``; returns (model in eval mode, config.json,
    normaliser). The mesh decoders need their topology: ``face4d.decoder.retarget.load_decoder``."""
    if kind in DECODER_KINDS:
        raise Face4DError(f"a {kind!r} mesh decoder is loaded with its topology: face4d.decoder.retarget.load_decoder")
    builders = {name: builder for name, builder in MODEL_KINDS.items() if name not in DECODER_KINDS}
    model, config, normalizer = load_model(directory, builders, device)
    if config["kind"] != kind:
        raise Face4DError(f"{directory}: holds a {config['kind']!r} model, expected a {kind!r} model")
    return model, config, normalizer


def load_weights(model: torch.nn.Module, directory: str | os.PathLike,
                 device: str | torch.device = "cpu") -> torch.nn.Module:
    """``model`` with the weights of ``directory``'s ``model.safetensors`` (checked against its own
    state dict first, ``check_state_dict``), on ``device``, in eval mode."""
    path = Path(directory) / WEIGHTS_FILE
    weights, _ = read_tensors(path)
    check_state_dict(model.state_dict(), weights, str(path))
    model.load_state_dict(weights)
    return model.to(device).eval()


# ---------------------------------------------------------------------------- training state

def flatten_tensors(tree: Any, prefix: str) -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (an optimiser's ``state_dict``) into named tensors and a JSON skeleton.

    Tagged nodes keep what JSON would lose: integer dict keys (optimiser state is keyed by
    parameter index) and tuples (Adam's ``betas``). ``unflatten_tensors`` inverts it.
    """
    tensors: dict[str, torch.Tensor] = {}

    def encode(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            tensors[path] = node
            return {"tensor": path}
        if isinstance(node, dict):
            if not all(isinstance(key, (str, int)) for key in node):
                raise TypeError(f"{path}: dict keys must be str or int")
            return {"dict": [[key, encode(value, f"{path}.{key}")] for key, value in node.items()]}
        if isinstance(node, (list, tuple)):
            tag = "tuple" if isinstance(node, tuple) else "list"
            return {tag: [encode(value, f"{path}.{i}") for i, value in enumerate(node)]}
        if node is None or isinstance(node, (bool, int, float, str)):
            return {"value": node}
        raise TypeError(f"{path}: cannot store a {type(node).__name__} without pickling")

    return tensors, encode(tree, prefix)


def unflatten_tensors(skeleton: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Rebuild the state that ``flatten_tensors`` split."""
    (tag, value), = skeleton.items()
    if tag == "tensor":
        return tensors[value]
    if tag == "dict":
        return {key: unflatten_tensors(item, tensors) for key, item in value}
    if tag == "list":
        return [unflatten_tensors(item, tensors) for item in value]
    if tag == "tuple":
        return tuple(unflatten_tensors(item, tensors) for item in value)
    return value


def save_training_state(
    directory: str | os.PathLike, tensors: Mapping[str, torch.Tensor], state: dict[str, Any]
) -> None:
    """Write last.safetensors then last.json; ``state["step"]`` goes into both so that
    ``load_training_state`` can tell a matching pair from one torn by a crash."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    step = int(state["step"])
    write_tensors(directory / STATE_TENSORS_FILE, tensors, metadata={"step": str(step)})
    write_json(directory / STATE_FILE, {"format": STATE_FORMAT, "version": FORMAT_VERSION, **state})


def has_training_state(directory: str | os.PathLike) -> bool:
    return (Path(directory) / STATE_FILE).is_file()


def load_training_state(directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and JSON state written by ``save_training_state``, checked to be one pair."""
    directory = Path(directory)
    state = read_json(directory / STATE_FILE)
    if state.get("format") != STATE_FORMAT or state.get("version") != FORMAT_VERSION or "step" not in state:
        raise Face4DError(f"{directory / STATE_FILE}: not a {STATE_FORMAT} v{FORMAT_VERSION} file")
    tensors, metadata = read_tensors(directory / STATE_TENSORS_FILE)
    if metadata.get("step") != str(state["step"]):
        raise Face4DError(f"{directory}: {STATE_TENSORS_FILE} (step {metadata.get('step')}) and {STATE_FILE} "
                          f"(step {state['step']}) do not belong together (interrupted write?); "
                          f"remove both to restart the run")
    return tensors, state
