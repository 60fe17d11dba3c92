"""The one training loop of the neural renderers: accelerate for one or many processes (DDP on gloo for
CPUs, NCCL on GPUs), diffusers' ``EMAModel``, checkpoints to resume from, determinism from a seed.

Batches are drawn without a DataLoader: step ``s`` of process ``r`` takes the indices and the torch
random state derived from ``(seed, s, r)``, so a resumed run takes exactly the batches, noise and
time steps of an uninterrupted one. The training state (raw weights, EMA, optimiser tensors) is
safetensors plus JSON, never pickle, written atomically every ``checkpoint_every`` steps.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from render.neural.data import NeuralInputError, PortraitPairs
from render.neural.io import WEIGHTS_FILE, config_from_dict, read_config, write_json, write_tensors

STATE_TENSORS = "train_state.safetensors"
STATE_FILE = "train_state.json"


@dataclass
class NeuralTrainConfig:
    steps: int = 2000
    batch_size: int = 16
    """Global batch: split evenly over the processes."""
    lr: float = 2e-4
    seed: int = 0
    ema_decay: float = 0.999
    """0 turns the EMA off (the saved weights are then the raw ones)."""
    checkpoint_every: int = 250
    grad_clip: float = 1.0
    init: str | None = None
    """A saved model folder of the same kind and configuration (a shipped default, say) whose weights
    a new run starts from instead of random ones: a warm start, with a fresh optimiser and EMA."""

    def run_settings(self) -> dict:
        """What must match to resume a run: everything but its length and checkpoint spacing."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("steps", "checkpoint_every")}


@dataclass
class TrainResult:
    step: int
    start_step: int
    losses: list[float]
    is_main: bool


def step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors = {f"opt.{pid}.{key}": value for pid, entry in state["state"].items() for key, value in entry.items()}
    return tensors, {"param_groups": state["param_groups"], "state_keys": {str(p): list(e) for p, e in
                                                                             state["state"].items()}}


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], skeleton: dict) -> None:
    state = {int(pid): {key: tensors[f"opt.{pid}.{key}"] for key in keys}
             for pid, keys in skeleton["state_keys"].items()}
    optimizer.load_state_dict({"state": state, "param_groups": skeleton["param_groups"]})


def fit(out_dir: str | Path, module: torch.nn.Module, dataset: PortraitPairs, config: NeuralTrainConfig,
        save: Callable[[Path, torch.nn.Module], None], kind: str, progress: bool = True,
        cpu: bool = True) -> TrainResult:
    """Train ``module`` (its ``forward(batch)`` returns the loss and a dict of logged terms; its
    ``model`` attribute is what ``save(out_dir, model)`` writes, with the EMA weights) for
    ``config.steps`` steps, resuming from ``out_dir``'s training state if there is one."""
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    out_dir = Path(out_dir)
    accelerator = Accelerator(cpu=cpu)
    world, rank = accelerator.num_processes, accelerator.process_index
    if config.batch_size % world:
        raise NeuralInputError(f"batch size {config.batch_size} does not split over {world} processes")
    torch.manual_seed(config.seed)
    params = [p for p in module.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    if config.init is not None and not (out_dir / STATE_FILE).is_file():  # a new run: the EMA starts from these
        _warm_start(module.model, config.init, kind)
    ema = EMAModel(params, decay=config.ema_decay) if config.ema_decay > 0 else None
    start = _resume(out_dir, module, optimizer, ema, config, kind)
    wrapped, optimizer = accelerator.prepare(module, optimizer)
    if ema is not None:  # made (or resumed) on the CPU, beside weights that prepare() may have moved
        ema.to(accelerator.device)
    losses: list[float] = []
    bar = tqdm(range(start, config.steps), disable=not (progress and accelerator.is_main_process),
               desc=f"train {kind}", initial=start, total=config.steps)
    for step in bar:
        seed = step_seed(config.seed, step, rank)
        torch.manual_seed(seed)
        indices = np.random.default_rng(seed).integers(0, len(dataset), config.batch_size // world)
        batch = {k: v.to(accelerator.device) for k, v in dataset.batch(indices).items()}
        loss, logs = wrapped(batch)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if config.grad_clip > 0:
            accelerator.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.step(params)
        losses.append(loss.item())
        bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
        done = step + 1
        if done % config.checkpoint_every == 0 or done == config.steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                _checkpoint(out_dir, module, optimizer, ema, config, kind, done, save)
    accelerator.wait_for_everyone()
    return TrainResult(max(config.steps, start), start, losses, accelerator.is_main_process)


def _checkpoint(out_dir, module, optimizer, ema, config, kind, step, save) -> None:
    """The weights to use (EMA) through ``save``, then the training state to resume from."""
    params = [p for p in module.model.parameters() if p.requires_grad]
    if ema is not None:
        ema.store(params)
        ema.copy_to(params)
    save(out_dir, module.model)
    if ema is not None:
        ema.restore(params)
    tensors = {f"model.{k}": v for k, v in module.model.state_dict().items()}
    opt_tensors, skeleton = _optimizer_tensors(optimizer)
    tensors.update(opt_tensors)
    if ema is not None:
        tensors.update({f"ema.{i}": p for i, p in enumerate(ema.shadow_params)})
    write_tensors(out_dir / STATE_TENSORS, tensors)
    write_json(out_dir / STATE_FILE, {"kind": kind, "step": step, "settings": config.run_settings(),
                                      "optimizer": skeleton,
                                      "ema_step": None if ema is None else ema.optimization_step})


def _warm_start(model: torch.nn.Module, init: str, kind: str) -> None:
    """``model``'s weights from the model folder ``init``, refused in one line unless it is of ``kind``
    with the same configuration (float16 exports load into the float32 weights)."""
    try:
        data = read_config(init, kind)
    except NeuralInputError as exc:
        raise NeuralInputError(f"--init {exc}") from None
    theirs, own = config_from_dict(type(model.config), data["config"]), model.config
    if theirs != own:
        changed = sorted(f.name for f in dataclasses.fields(own) if getattr(theirs, f.name) != getattr(own, f.name))
        raise NeuralInputError(f"--init {init} holds a {kind} model with other settings ({', '.join(changed)})")
    model.load_state_dict(load_file(str(Path(init) / WEIGHTS_FILE)))


def _resume(out_dir: Path, module, optimizer, ema, config: NeuralTrainConfig, kind: str) -> int:
    state_path = out_dir / STATE_FILE
    if not state_path.is_file():
        return 0
    state = json.loads(state_path.read_text())
    if state.get("kind") != kind:
        raise NeuralInputError(f"{out_dir} holds a {state.get('kind')!r} run, not {kind!r}; use another --out")
    settings = json.loads(json.dumps(config.run_settings()))
    defaults = json.loads(json.dumps(NeuralTrainConfig().run_settings()))  # settings added since the run began
    saved = {**{k: v for k, v in defaults.items() if k not in state["settings"]}, **state["settings"]}
    if saved != settings:
        changed = sorted(k for k in settings if saved.get(k) != settings[k])
        raise NeuralInputError(f"{out_dir} holds a run with other settings ({', '.join(changed)}); "
                               f"use another --out or the same settings to resume")
    tensors = load_file(str(out_dir / STATE_TENSORS))
    module.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    _load_optimizer(optimizer, tensors, state["optimizer"])
    if ema is not None:
        ema.shadow_params = [tensors[f"ema.{i}"].clone() for i in range(len(ema.shadow_params))]
        ema.optimization_step = state["ema_step"]
    return int(state["step"])
