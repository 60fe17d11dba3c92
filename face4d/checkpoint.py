"""Model directories and training state on disk: safetensors for tensors, JSON for the rest.

Layout of a model directory (the ``--out`` of every ``face4d train`` command)::

    config.json          format, model kind, model config, normaliser, and the caller's extras
                         (training config, step, diffusion schedule, ...)
    model.safetensors    the weights to run: the EMA weights when written by the trainer
    last.safetensors     training state: raw weights, EMA, optimiser tensors
    last.json            the rest of the training state: step, optimiser skeleton, run fingerprint
    prev.safetensors     the previous training state, only while a new one is being written
    prev.json

Nothing is pickled (``torch.save``/``torch.load`` would run arbitrary code from a downloaded
checkpoint). Every file is written through ``atomic_file``, so a crash leaves either the old or the
new file, never half of one. The two files of a training state are written one after the other and
record its step in both, so a pair torn by a crash between the two writes is detected; the previous
pair is kept (hard-linked as ``prev.safetensors`` / ``prev.json``) until the new one is complete, and
resuming falls back to it, so a crash at any moment loses at most the steps since that checkpoint.
A model is rebuilt from its config by a *builder*, ``(ConfigCls, ModelCls)`` with
``ConfigCls.from_dict(dict)`` and ``ModelCls(config)``, chosen by the kind stored in config.json.
``MODEL_KINDS`` is the one registry of the kinds face4d writes, the mesh decoders included (they
are built with their mesh topology, by ``face4d.decoder.retarget.load_decoder``); a new model type
is one entry there. A *bundle* is a directory of model directories: ``denoiser/`` and the
noise-aware classifiers ``classifier_I/`` and ``classifier_S/``; a text guide (kind ``text_guide``)
serves text control. The default bundle ships inside the package (``face4d/weights/default``, with
the mesh decoder in ``decoder/``), so generation works offline right after install.

A bundle's ``bundle.json`` (``write_bundle``) records once what its members must share, the diffusion
(schedule with its betas, the denoiser's prediction) and the landmark normaliser; loading reads the
schedule and the normaliser from it and checks every member's own copy against it
(``BundleConfig.check_member``). A bundle without one falls back to its denoiser's config.json.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from face4d.data.normalize import LandmarkNormalizer
from face4d.decoder.model import DECODER_KINDS
from face4d.diffusion import DiffusionConfig
from face4d.errors import Face4DError
from face4d.jsonfile import read_json, write_json
from face4d.models import (Classifier, ClassifierConfig, Denoiser, DenoiserConfig, ICConfig, IndependentClassifier,
                           TextGuide, TextGuideConfig)
from meshops.atomic import atomic_file, pause_point

FORMAT = "face4d-model"
FORMAT_VERSION = 1
STATE_FORMAT = "face4d-train-state"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_TENSORS_FILE = "last.safetensors"
STATE_FILE = "last.json"
PREVIOUS_STATE = ("prev.safetensors", "prev.json")
BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = "face4d-bundle"
BUNDLE_MEMBERS = {"denoiser": "denoiser", "classifier_I": "classifier", "classifier_S": "classifier",
                  "text_guide": "text_guide"}
"""A landmark bundle's member directories and the model kind each holds; only ``denoiser/`` is required."""
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


_JSON_TYPES = {int: (int,), float: (int, float), bool: (bool,), str: (str,)}


def check_field_types(config_cls: type, data: Any, source: str) -> None:
    """Fail, naming the field, when a config read from JSON has a value of the wrong type for one of
    ``config_cls``'s plain fields (int, float, bool, str, or one of them or None), e.g. ``"d_model": "32"``,
    instead of failing later with a comparison error that names nothing."""
    if not isinstance(data, dict):
        raise Face4DError(f"{source}: expected a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        if field.name not in data:
            continue
        hint, value = hints[field.name], data[field.name]
        options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        if not all(option in _JSON_TYPES or option is type(None) for option in options):
            continue  # nested or structured: checked by the config itself
        allowed = tuple(t for option in options if option in _JSON_TYPES for t in _JSON_TYPES[option])
        ok = (value is None and type(None) in options) or (
            isinstance(value, allowed) and (bool not in options or isinstance(value, bool))
            and (isinstance(value, bool) <= (bool in options)))
        if not ok:
            names = " or ".join("null" if option is type(None) else option.__name__ for option in options)
            raise Face4DError(f"{source}.{field.name} must be {names}, got {value!r}")


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
    steps = config.get("diffusion", {}).get("num_timesteps", 1) if isinstance(config.get("diffusion"), dict) else None
    if "diffusion" in config and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise Face4DError(f"{path}: diffusion.num_timesteps must be a positive integer, got {steps!r}")
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
    check_field_types(config_cls, config["model_config"], f"{directory / CONFIG_FILE}: model_config")
    try:
        model = model_cls(config_cls.from_dict(config["model_config"]))
        normalizer = None if config.get("normalizer") is None else LandmarkNormalizer.from_dict(config["normalizer"])
    except (Face4DError, TypeError, KeyError) as exc:
        raise Face4DError(f"{directory / CONFIG_FILE}: invalid config ({exc})") from None
    return load_weights(model, directory, device), config, normalizer


def default_bundle() -> Path:
    """The bundle shipped with the package."""
    return Path(str(resources.files("face4d") / "weights" / "default"))


@dataclasses.dataclass(frozen=True)
class BundleConfig:
    """What the members of a bundle share: its ``diffusion`` and its landmark ``normalizer``."""

    diffusion: DiffusionConfig
    normalizer: LandmarkNormalizer

    @classmethod
    def of_denoiser(cls, config: dict[str, Any], normalizer: LandmarkNormalizer | None, source: str) -> BundleConfig:
        """The bundle config a denoiser's config.json implies (a bundle without ``bundle.json``)."""
        if normalizer is None:
            raise Face4DError(f"{source}: config.json has no landmark normaliser")
        return cls(_member_diffusion(config, source), normalizer)

    def check_member(self, config: dict[str, Any], normalizer: LandmarkNormalizer | None, source: str,
                     against: str = BUNDLE_FILE) -> None:
        """Fail, naming the entry, when a member's config.json disagrees with this config: its
        schedule (T, betas), the denoiser's prediction, or its normaliser (when it records one)."""
        member = _member_diffusion(config, source)
        fields = ["schedule", "num_timesteps", "beta_start", "beta_end"]
        fields += ["prediction"] if config["kind"] == "denoiser" else []
        for name in fields:
            if getattr(member, name) != getattr(self.diffusion, name):
                raise Face4DError(f"{source}: diffusion.{name} is {getattr(member, name)!r}, {against} says "
                                  f"{getattr(self.diffusion, name)!r} (the models of one bundle share its diffusion)")
        if normalizer is not None and normalizer.to_dict() != self.normalizer.to_dict():
            raise Face4DError(f"{source}: trained with another landmark normaliser than {against} records (the "
                              f"models of one bundle must be trained on the same dataset)")

    def to_dict(self) -> dict[str, Any]:
        return {"format": BUNDLE_FORMAT, "version": FORMAT_VERSION, "diffusion": self.diffusion.to_dict(),
                "normalizer": self.normalizer.to_dict()}


def _member_diffusion(config: dict[str, Any], source: str) -> DiffusionConfig:
    if not isinstance(config.get("diffusion"), dict):
        raise Face4DError(f"{source}: config.json has no diffusion entry (a landmark model of a bundle needs one)")
    try:
        return DiffusionConfig.from_dict(config["diffusion"])
    except (Face4DError, TypeError) as exc:
        raise Face4DError(f"{source}: invalid diffusion entry ({exc})") from None


def read_bundle(directory: str | os.PathLike) -> BundleConfig | None:
    """The ``bundle.json`` of a bundle directory, or None when it has none (members' configs then rule)."""
    path = Path(directory) / BUNDLE_FILE
    if not path.is_file():
        return None
    data = read_json(path)
    if data.get("format") != BUNDLE_FORMAT or data.get("version") != FORMAT_VERSION:
        raise Face4DError(f"{path}: not a {BUNDLE_FORMAT} v{FORMAT_VERSION} file")
    try:
        diffusion = DiffusionConfig.from_dict(data["diffusion"])
        return BundleConfig(diffusion, LandmarkNormalizer.from_dict(data["normalizer"]))
    except (Face4DError, TypeError, KeyError, ValueError) as exc:
        raise Face4DError(f"{path}: invalid bundle config ({exc})") from None


def write_bundle(directory: str | os.PathLike) -> Path:
    """Write ``directory``'s ``bundle.json`` from its members (``BUNDLE_MEMBERS``, ``denoiser/`` required):
    the denoiser's diffusion and normaliser, after checking that every member agrees with them.
    Run it once a bundle's members are trained; returns the file written."""
    directory = Path(directory)
    members = {name: read_model_config(directory / name) for name in BUNDLE_MEMBERS if (directory / name).is_dir()}
    if "denoiser" not in members:
        raise Face4DError(f"{directory}: a bundle needs a denoiser/ model directory")
    normalizers = {name: config["normalizer"] and LandmarkNormalizer.from_dict(config["normalizer"])
                   for name, config in members.items()}
    bundle = BundleConfig.of_denoiser(members["denoiser"], normalizers["denoiser"], str(directory / "denoiser"))
    for name, config in members.items():
        bundle.check_member(config, normalizers[name], str(directory / name), against="the denoiser")
    write_json(directory / BUNDLE_FILE, bundle.to_dict())
    return directory / BUNDLE_FILE


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
    broken = [name for name, value in weights.items() if value.is_floating_point() and not value.isfinite().all()]
    if broken:
        raise Face4DError(f"{path}: weights contain NaN or infinity ({', '.join(_abbreviate(broken))}); the model "
                          f"is broken (a diverged training run?)")
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
    ``load_training_state`` can tell a matching pair from one torn by a crash. The pair found there,
    if whole, is kept as ``prev.*`` until both new files are written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    step = int(state["step"])
    last = (directory / STATE_TENSORS_FILE, directory / STATE_FILE)
    previous = tuple(directory / name for name in PREVIOUS_STATE)
    if _pair_step(*last) is not None:
        for source, kept in zip(last, previous):
            _keep_copy(source, kept)
    write_tensors(last[0], tensors, metadata={"step": str(step)})
    pause_point("checkpoint-pair")
    write_json(last[1], {"format": STATE_FORMAT, "version": FORMAT_VERSION, **state})
    for kept in previous:
        kept.unlink(missing_ok=True)


def _keep_copy(source: Path, kept: Path) -> None:
    """``kept`` becomes a copy of ``source`` (a hard link where the file system has them), atomically."""
    with atomic_file(kept, overwrite=True) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copy2(source, tmp)


def _pair_step(tensors_path: Path, state_path: Path) -> int | None:
    """The step of a whole training state pair; None if a file is missing or unreadable or the two disagree."""
    try:
        state = read_json(state_path)
        with safe_open(tensors_path, framework="pt") as fh:
            stored = (fh.metadata() or {}).get("step")
    except (Face4DError, SafetensorError, OSError):
        return None
    return int(state["step"]) if isinstance(state.get("step"), int) and stored == str(state["step"]) else None


def has_training_state(directory: str | os.PathLike) -> bool:
    return any((Path(directory) / name).is_file() for name in (STATE_FILE, PREVIOUS_STATE[1]))


def load_training_state(directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and JSON state written by ``save_training_state``, checked to be one pair. When
    the last pair was torn by a crash between its two writes, the previous pair is used (a note on
    stderr says so)."""
    directory = Path(directory)
    last = (directory / STATE_TENSORS_FILE, directory / STATE_FILE)
    previous = tuple(directory / name for name in PREVIOUS_STATE)
    if _pair_step(*last) is None and _pair_step(*previous) is not None:
        print(f"face4d: note: {directory}: the last checkpoint was interrupted while being written; resuming from "
              f"the previous one (step {_pair_step(*previous)})", file=sys.stderr)
        last = previous
    state = read_json(last[1])
    if state.get("format") != STATE_FORMAT or state.get("version") != FORMAT_VERSION or "step" not in state:
        raise Face4DError(f"{last[1]}: not a {STATE_FORMAT} v{FORMAT_VERSION} file")
    tensors, metadata = read_tensors(last[0])
    if metadata.get("step") != str(state["step"]):
        raise Face4DError(f"{directory}: {last[0].name} (step {metadata.get('step')}) and {last[1].name} "
                          f"(step {state['step']}) do not belong together (interrupted write?) and no whole "
                          f"previous checkpoint is left; remove both to restart the run")
    return tensors, state
