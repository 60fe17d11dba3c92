"""The shared training loop, checkpoints and ``face4d train``: tiny models, a 30-sequence dataset."""
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from face4d.checkpoint import MODEL_KINDS, load_model, read_tensors
from face4d.cli import main
from face4d.data import Dataset, LandmarkNormalizer, LandmarkSequences, SynthConfig, build_dataset, label_index
from face4d.data.interchange import SEQUENCE_TYPES
from face4d.diffusion import GaussianDiffusion, linear_beta_schedule
from face4d.errors import Face4DError
from face4d.models import Denoiser, DenoiserConfig
from face4d.training import TrainConfig, Trainer, diffusion_loss, seeded

pytestmark = pytest.mark.slow  # real models, training, rendering or the CLI end to end

TINY = DenoiserConfig(d_model=32, layers=1, heads=2, ff=64, dropout=0.1)
TINY_ARGS = ["--d-model", "32", "--layers", "1", "--heads", "2", "--ff", "64"]
BUILDERS = MODEL_KINDS
DIFFUSION = GaussianDiffusion(linear_beta_schedule(2000))



@dataclass
class Data:
    root: Path
    train: LandmarkSequences
    normalizer: LandmarkNormalizer


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Data:
    root = build_dataset(tmp_path_factory.mktemp("data") / "d", 30, config=SynthConfig(variable_length=True),
                         progress=False)
    train = Dataset.load(root).sequences("train")
    assert len(set(train.lengths.tolist())) > 1  # mixed lengths, so the masks matter
    return Data(root, train, LandmarkNormalizer.fit(train))


def _trainer(data: Data, out: Path, steps: int, model_config: DenoiserConfig = TINY, **overrides) -> Trainer:
    config = TrainConfig(**{"steps": steps, "batch_size": 8, "lr": 1e-3, "log_every": 5, "device": "cpu", **overrides})
    model = seeded(config.seed, lambda: Denoiser(model_config))
    return Trainer(model, diffusion_loss(DIFFUSION), data.train, data.normalizer, out, config, "denoiser",
                   model_config.to_dict(), progress=False)


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# ------------------------------------------------------------------------------------ batches

def test_batches_mask_padding_and_carry_labels(data, tmp_path):
    trainer = _trainer(data, tmp_path / "m", steps=1)
    n = len(data.train)
    seen = []
    for step in range(-(-n // 8)):  # the batches of the first epoch
        batch = trainer.batch(step)
        assert batch["x0"].shape == (8, int(batch["lengths"].max()), 68, 3)
        assert torch.equal(batch["mask"], torch.arange(batch["x0"].shape[1])[None] < batch["lengths"][:, None])
        assert (batch["x0"][~batch["mask"]] == 0).all() and (batch["x0"][batch["mask"]] != 0).any()
        assert set(batch["type"].tolist()) <= {0, 1}
        seen += zip(batch["lengths"].tolist(), batch["label"].tolist(), batch["type"].tolist())
    expected = zip(data.train.lengths.tolist(), map(label_index, data.train.labels),
                   [SEQUENCE_TYPES.index(t) for t in data.train.types])
    assert sorted(seen[:n]) == sorted(expected)  # every sequence once per epoch
    assert torch.equal(trainer.batch(3)["x0"], _trainer(data, tmp_path / "m2", steps=1).batch(3)["x0"])


# -------------------------------------------------------------------------------- determinism

def test_same_seed_same_weights_other_seed_other_weights(data, tmp_path):
    runs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        trainer = _trainer(data, tmp_path / name, steps=4, seed=seed)
        trainer.fit()
        runs.append(trainer.model.state_dict())
    _assert_same(runs[0], runs[1])
    assert not torch.equal(runs[0]["output.weight"], runs[2]["output.weight"])


def test_resume_equals_an_uninterrupted_run(data, tmp_path):
    whole = _trainer(data, tmp_path / "whole", steps=20, checkpoint_every=7)
    whole_losses = whole.fit()
    first = _trainer(data, tmp_path / "parts", steps=10, checkpoint_every=7)
    first_losses = first.fit()
    second = _trainer(data, tmp_path / "parts", steps=20, checkpoint_every=7)
    assert second.start_step == 10
    second_losses = second.fit()
    assert whole_losses == first_losses + second_losses
    _assert_same(whole.model.state_dict(), second.model.state_dict())
    _assert_same(whole.ema, second.ema)
    _assert_same(read_tensors(tmp_path / "whole" / "last.safetensors")[0],
                 read_tensors(tmp_path / "parts" / "last.safetensors")[0])


def test_a_finished_run_is_not_trained_further(data, tmp_path):
    _trainer(data, tmp_path / "m", steps=3).fit()
    again = _trainer(data, tmp_path / "m", steps=3)
    assert again.start_step == 3 and again.fit() == []


def test_ema_follows_the_decay_formula(data, tmp_path):
    trainer = _trainer(data, tmp_path / "m", steps=1, ema_decay=0.999)
    before = {name: value.clone() for name, value in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    decay = min(0.999, 1 / 10)  # warm-up at the first update
    for name, value in trainer.ema.items():
        torch.testing.assert_close(value, decay * before[name] + (1 - decay) * after[name], rtol=0, atol=1e-6)
    assert not torch.equal(trainer.ema["output.weight"], after["output.weight"])


def test_loss_decreases(data, tmp_path):
    config = DenoiserConfig(d_model=32, layers=1, heads=2, ff=64, dropout=0.0)
    losses = _trainer(data, tmp_path / "m", steps=100, model_config=config, batch_size=16).fit()
    assert len(losses) == 100
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    # predicting eps = 0 scores 1 in expectation; the tiny model is at about 0.92 after 100 steps (seeds 0-2)
    assert last < 0.85 * first and last < 0.96, (first, last)


# -------------------------------------------------------------------------------- checkpoints

def test_checkpoint_round_trip(data, tmp_path):
    trainer = _trainer(data, tmp_path / "m", steps=3)
    trainer.fit()
    model, config, normalizer = load_model(tmp_path / "m", BUILDERS)
    assert config["kind"] == "denoiser" and config["step"] == 3 and config["training"]["steps"] == 3
    assert DenoiserConfig.from_dict(config["model_config"]) == TINY
    assert normalizer.to_dict() == data.normalizer.to_dict()
    reference = Denoiser(TINY)
    reference.load_state_dict(trainer.ema)
    reference.eval()
    batch = trainer.batch(0)
    t = torch.arange(8) * 250
    with torch.no_grad():
        assert torch.equal(model(batch["x0"], t, mask=batch["mask"]), reference(batch["x0"], t, mask=batch["mask"]))
    assert not model.training


def test_load_model_errors(data, tmp_path):
    out = tmp_path / "m"
    _trainer(data, out, steps=1).fit()
    with pytest.raises(Face4DError, match="no config.json"):
        load_model(tmp_path, BUILDERS)
    with pytest.raises(Face4DError, match="model kind 'denoiser' cannot be loaded here; expected one of \\['lstm'\\]"):
        load_model(out, {"lstm": (DenoiserConfig, Denoiser)})

    config_path = out / "config.json"
    original = json.loads(config_path.read_text())

    def with_model_config(**changes):
        config_path.write_text(json.dumps({**original, "model_config": {**original["model_config"], **changes}}))

    with_model_config(ff=128)
    with pytest.raises(Face4DError, match=r"shape mismatch .*layers\.0\.linear1\.weight \(64, 32\) != \(128, 32\)"):
        load_model(out, BUILDERS)
    with_model_config(layers=2)
    with pytest.raises(Face4DError, match=r"missing: encoder\.layers\.1\."):
        load_model(out, BUILDERS)
    with_model_config(width=3)
    with pytest.raises(Face4DError, match="unknown DenoiserConfig keys: \\['width'\\]"):
        load_model(out, BUILDERS)
    config_path.write_text(json.dumps(original))

    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(Face4DError, match="model.safetensors: truncated or corrupt safetensors file"):
        load_model(out, BUILDERS)


def test_resume_refuses_another_run(data, tmp_path):
    out = tmp_path / "m"
    _trainer(data, out, steps=2).fit()
    with pytest.raises(Face4DError, match=r"training\.lr: 0\.001 \(stored\) != 0\.002 \(now\)"):
        _trainer(data, out, steps=4, lr=2e-3)
    wider = DenoiserConfig(d_model=64, layers=1, heads=2, ff=64)
    with pytest.raises(Face4DError, match=r"model_config\.d_model: 32 \(stored\) != 64 \(now\)"):
        _trainer(data, out, steps=4, model_config=wider)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep")
    with pytest.raises(Face4DError, match="holds no training state"):
        _trainer(data, tmp_path / "other", steps=1)


def test_damaged_training_state_is_refused(data, tmp_path):
    out = tmp_path / "m"
    _trainer(data, out, steps=2).fit()
    state = json.loads((out / "last.json").read_text())
    (out / "last.json").write_text(json.dumps({**state, "step": 5}))
    with pytest.raises(Face4DError, match="do not belong together"):
        _trainer(data, out, steps=6)
    (out / "last.json").write_text(json.dumps(state))
    tensors = out / "last.safetensors"
    tensors.write_bytes(tensors.read_bytes()[: tensors.stat().st_size // 2])
    with pytest.raises(Face4DError, match="last.safetensors: truncated or corrupt"):
        _trainer(data, out, steps=6)


# ---------------------------------------------------------------------------- data parallel

DDP_SCRIPT = """
import json, os, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
from face4d.data import Dataset, LandmarkNormalizer
from face4d.diffusion import GaussianDiffusion, linear_beta_schedule
from face4d.models import Denoiser, DenoiserConfig
from face4d.training import TrainConfig, Trainer, diffusion_loss, seeded

data_dir, base = Path(sys.argv[1]), Path(sys.argv[2])
rank = int(os.environ["RANK"])
train = Dataset.load(data_dir).sequences("train")
config = DenoiserConfig(d_model=32, layers=1, heads=2, ff=64)
train_config = TrainConfig(steps=3, batch_size=8, lr=1e-3, device="cpu")
# a different initialisation on each rank: DDP must start every rank from rank 0's weights
model = seeded(rank, lambda: Denoiser(config))
trainer = Trainer(model, diffusion_loss(GaussianDiffusion(linear_beta_schedule(100))), train,
                  LandmarkNormalizer.fit(train), base / f"out{rank}", train_config, "denoiser", config.to_dict(),
                  progress=False)
losses = trainer.fit()
save_file({**{"model." + k: v for k, v in trainer.model.state_dict().items()},
           **{"ema." + k: v for k, v in trainer.ema.items()}}, str(base / f"rank{rank}.safetensors"))
(base / f"rank{rank}.json").write_text(json.dumps({"losses": losses, "shard": trainer.batch(0)["lengths"].tolist(),
                                                   "world": trainer.world_size}))
"""


def test_data_parallel_on_two_gloo_processes(data, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         str(data.root), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1)]
    _assert_same(ranks[0], ranks[1])
    logs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert logs[0]["world"] == 2 and len(logs[0]["shard"]) == 4  # each rank holds half of the batch of 8
    assert logs[0]["losses"] != logs[1]["losses"]  # different shards and noise
    assert not (tmp_path / "out1").exists()  # only rank 0 writes
    saved = load_file(tmp_path / "out0" / "model.safetensors")
    _assert_same(saved, {k[len("ema."):]: v for k, v in ranks[0].items() if k.startswith("ema.")})
    assert json.loads((tmp_path / "out0" / "config.json").read_text())["step"] == 3


# ------------------------------------------------------------------------------------- CLI

def test_cli_trains_and_resumes(data, tmp_path, capsys):
    out = tmp_path / "m"
    argv = ["train", "denoiser", "--data", str(data.root), "--out", str(out), "--batch-size", "8", "--device", "cpu",
            "--timesteps", "100", "--quiet", *TINY_ARGS]
    assert main([*argv, "--steps", "3"]) == 0
    assert "denoiser at step 3; model saved in" in capsys.readouterr().out
    assert main([*argv, "--steps", "5"]) == 0
    assert "denoiser at step 5 (resumed from step 3)" in capsys.readouterr().out
    model, config, _ = load_model(out, BUILDERS)
    assert config["step"] == 5
    assert config["diffusion"] == {"schedule": "linear", "num_timesteps": 100, "prediction": "sample"}
    assert config["loss"] == {"velocity_weight": 1.0, "snr_gamma": 5.0, "snr_floor": 0.0}
    assert model.config.skip == "mean"  # ours, for a sample-predicting network
    assert config["training"]["batch_size"] == 8 and model.config == replace(TINY, skip="mean")


@pytest.mark.parametrize("extra,message", [
    (["--data", "{tmp}/missing"], "no manifest.json"),
    (["--steps", "0"], "steps must be >= 1"),
    (["--batch-size", "-1"], "batch-size must be >= 1"),
    (["--heads", "5"], "must be divisible by heads"),
    (["--device", "gpu"], "unknown device 'gpu'"),
])
def test_cli_errors_are_one_line(data, tmp_path, capsys, extra, message):
    argv = ["train", "denoiser", "--data", str(data.root), "--out", str(tmp_path / "m"), "--quiet", *TINY_ARGS]
    argv += [arg.format(tmp=tmp_path) for arg in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("face4d: error:")
    assert not (tmp_path / "m").exists()


def test_cli_trains_both_classifiers(data, tmp_path, capsys):
    from face4d.checkpoint import load_pretrained
    for kind, extra in (("S", [*TINY_ARGS, "--kind", "S"]), ("ic", ["--hidden", "16"])):
        command = "ic" if kind == "ic" else "classifier"
        out = tmp_path / kind
        argv = ["train", command, "--data", str(data.root), "--out", str(out), "--batch-size", "8", "--steps", "4",
                "--device", "cpu", "--quiet", *extra]
        assert main(argv) == 0
        assert f"{command} at step 4; model saved in" in capsys.readouterr().out
        model, config, normalizer = load_pretrained(out, command)
        assert config["step"] == 4 and normalizer is not None
        if kind == "S":
            assert model.config.kind == "S" and model.config.num_outputs == 36
            assert config["diffusion"]["num_timesteps"] == 2000
        else:
            assert model.config.hidden == 16 and model.config.normalizer is not None
    with pytest.raises(Exception, match="expected a 'denoiser' model"):
        load_pretrained(tmp_path / "S", "denoiser")


# ------------------------------------------------------------------------ conditional denoiser

def test_conditional_denoiser_reads_its_condition_and_drops_it():
    torch.manual_seed(0)
    model = Denoiser(replace(TINY, num_labels=18, dropout=0.0)).eval()
    with torch.no_grad():  # fresh embeddings are random: a label must change the output
        x, t = torch.randn(2, 6, 68, 3), torch.tensor([5, 900])
        none = model(x, t)
        assert torch.equal(none, model(x, t, label=torch.tensor([-1, -1]), order=torch.tensor([-1, -1])))
        smile = model(x, t, label=torch.tensor([3, 3]))
        assert not torch.allclose(none, smile)
        assert torch.equal(model.conditioned(torch.tensor([3, 3]))(x, t), smile)
        guided = model.conditioned(torch.tensor([3, 3]), scale=3.0)(x, t)
        assert torch.allclose(guided, none + 3.0 * (smile - none), atol=1e-5)
    with pytest.raises(Face4DError, match="condition indices"):
        model(x, t, label=torch.tensor([18, 0]))
    with pytest.raises(Face4DError, match="unconditional"):
        Denoiser(TINY)(x, t, label=torch.tensor([0, 0]))


def test_condition_dropout_shares(data):
    seen = []

    def network(x, t, mask=None, label=None, order=None):
        seen.append((label.clone(), order.clone()))
        return torch.zeros_like(x)

    x0 = torch.zeros(4000, 2, 68, 3)
    batch = {"x0": x0, "mask": None, "label": torch.full((4000,), 7), "type": torch.ones(4000, dtype=torch.long)}
    torch.manual_seed(0)
    diffusion_loss(DIFFUSION, velocity_weight=0.0, condition_dropout=0.2)(network, batch)
    label, order = seen[0]
    no_label = (label == -1).float().mean().item()
    label_only = ((label == 7) & (order == -1)).float().mean().item()
    assert abs(no_label - 0.2) < 0.03 and abs(label_only - 0.8 * 0.2) < 0.03
    assert bool((order[label == -1] == -1).all())  # no order without a label


def test_cli_conditional_denoiser_starts_from_an_unconditional_one(data, tmp_path, capsys):
    base = ["train", "denoiser", "--data", str(data.root), "--batch-size", "8", "--device", "cpu", "--quiet",
            "--steps", "2", *TINY_ARGS]
    assert main([*base, "--out", str(tmp_path / "u")]) == 0
    assert main([*base, "--out", str(tmp_path / "c"), "--conditional", "--init-from", str(tmp_path / "u")]) == 0
    model, config, _ = load_model(tmp_path / "c", BUILDERS)
    assert model.config.num_labels == 18 and config["loss"]["condition_dropout"] == 0.15
    assert config["init_from"] == str(tmp_path / "u")
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "bad"), "--init-from", str(tmp_path / "u"), "--d-model", "16"]) == 2
    assert "another architecture" in capsys.readouterr().err
