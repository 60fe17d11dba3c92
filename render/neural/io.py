"""Model folders of the neural renderers: ``config.json`` (the model's config dataclass, plus its kind)
and ``model.safetensors``; nothing is pickled. Every file goes through ``meshops.atomic.atomic_file``,
so an interrupted save leaves the old or the new file whole."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from meshops.atomic import atomic_dir, atomic_file
from render.neural.data import NeuralInputError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def write_json(path: Path, data: Any) -> None:
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    with atomic_file(path, overwrite=True) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))


def config_from_dict(cls: type, data: dict) -> Any:
    """A config dataclass from JSON; lists become tuples where the field's default is a tuple."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise NeuralInputError(f"{cls.__name__}: unknown fields {unknown}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def save_model(directory: str | os.PathLike, kind: str, config: Any, module: torch.nn.Module,
               extra: dict | None = None) -> Path:
    """Write ``module``'s weights and ``config`` (a dataclass) into ``directory`` (created if missing)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_tensors(directory / WEIGHTS_FILE, module.state_dict())
    write_json(directory / CONFIG_FILE, {"kind": kind, "config": dataclasses.asdict(config), **(extra or {})})
    return directory


def read_config(directory: str | os.PathLike, kind: str | None) -> dict:
    """A model folder's ``config.json``, checked to be of ``kind`` (None: any)."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file() or not (Path(directory) / WEIGHTS_FILE).is_file():
        raise NeuralInputError(f"{directory} holds no trained model (config.json and model.safetensors)")
    data = json.loads(path.read_text())
    if kind is not None and data.get("kind") != kind:
        raise NeuralInputError(f"{directory} holds a {data.get('kind')!r} model, not {kind!r}")
    return data


def load_model(directory: str | os.PathLike, kind: str, config_cls: type, model_cls: type,
               device: str | torch.device = "cpu") -> torch.nn.Module:
    """The model saved by ``save_model``, in eval mode."""
    data = read_config(directory, kind)
    model = model_cls(config_from_dict(config_cls, data["config"]))
    model.load_state_dict(load_file(str(Path(directory) / WEIGHTS_FILE)))
    return model.to(device).eval()


def export_model(source: str | os.PathLike, target: str | os.PathLike, dtype: torch.dtype = torch.float16,
                 overwrite: bool = False, config_updates: dict | None = None) -> Path:
    """A trained model folder's inference files (``config.json``, and ``model.safetensors`` with its
    floating-point tensors in ``dtype``) written as a new folder ``target``, whole or not at all: the
    form of the shipped defaults, half the size in float16 (loading casts back to the model's float32).
    ``config_updates`` sets config fields chosen after training (a sampling setting such as FacEnhance's
    ``sampling_steps``)."""
    source = Path(source)
    data = read_config(source, None)
    unknown = sorted(set(config_updates or {}) - set(data["config"]))
    if unknown:
        raise NeuralInputError(f"{source}: the config has no fields {unknown}")
    data["config"].update(config_updates or {})
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(str(source / WEIGHTS_FILE)).items()}
    with atomic_dir(target, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(data, indent=2))
    return Path(target)
