"""Small networks trained on renders that judge images: a 68-landmark regressor, an identity encoder
and an expression classifier. The image models' losses use the first two (CCFExp's landmark loss and
time-dependent identity loss); ``metrics`` uses all three (NME, identity cosine, label accuracy, the
feature space of the Fréchet distance).

The identity encoder is trained as a cosine classifier over the training identities (normalised
embeddings, a scaled-cosine softmax), so that on unseen identities the cosine of two embeddings says
whether two images show the same person. The expression classifier has one class per label plus
neutral (class 0). All three are trained together by ``train_evaluators`` (one loop, three losses).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from render.neural.data import PortraitPairs
from render.neural.io import load_model, save_model

KIND = "neural_evaluators"


@dataclass
class EvaluatorConfig:
    size: int = 64
    widths: tuple[int, ...] = (32, 64, 96, 128)
    embedding: int = 128
    identities: int = 1
    """Training identities (rows of the identity classifier; ids 0..identities-1)."""
    labels: tuple[str, ...] = field(default_factory=tuple)
    scale: float = 16.0
    """The cosine classifier's logit scale."""


class ConvStack(nn.Sequential):
    """Stride-2 3x3 convolutions with GroupNorm and SiLU: S -> S / 2^len(widths)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...]):
        layers = []
        for width in widths:
            layers += [nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
                       nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU()]
            in_channels = width
        super().__init__(*layers)


class LandmarkRegressor(nn.Module):
    """Image in [-1, 1] -> (B, 68, 2) landmarks in pixels."""

    def __init__(self, size: int, widths: tuple[int, ...]):
        super().__init__()
        self.size = size
        self.features = ConvStack(3, widths)
        cells = (size // 2 ** len(widths)) ** 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * cells, 256), nn.SiLU(), nn.Linear(256, 136))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(image)).view(-1, 68, 2)
        return (out + 0.5) * self.size


class Encoder(nn.Module):
    """Image -> pooled feature (B, widths[-1]) -> linear output (B, out)."""

    def __init__(self, widths: tuple[int, ...], out: int):
        super().__init__()
        self.features = ConvStack(3, widths)
        self.head = nn.Linear(widths[-1], out)

    def pooled(self, image: torch.Tensor) -> torch.Tensor:
        return self.features(image).mean(dim=(2, 3))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(image))


class Evaluators(nn.Module):
    def __init__(self, config: EvaluatorConfig):
        super().__init__()
        self.config = config
        self.landmarks = LandmarkRegressor(config.size, config.widths)
        self.identity = Encoder(config.widths, config.embedding)
        self.identity_classes = nn.Parameter(torch.randn(config.identities, config.embedding) * 0.1)
        self.expression = Encoder(config.widths, 1 + len(config.labels))

    def identity_embedding(self, image: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.identity(image), dim=-1)

    def label_logits(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 1 + labels): class 0 is neutral, class k + 1 the manifest's label k."""
        return self.expression(image)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """The feature space of our Fréchet distance: identity embedding and expression features."""
        return torch.cat([self.identity_embedding(image), self.expression.pooled(image)], dim=-1)

    def save_pretrained(self, directory) -> None:
        save_model(directory, KIND, self.config, self)

    @classmethod
    def from_pretrained(cls, directory, device="cpu") -> "Evaluators":
        return load_model(directory, KIND, EvaluatorConfig, cls, device)


class EvaluatorLoss(nn.Module):
    """The three evaluators' training losses on a batch of target images (``fit``'s module)."""

    def __init__(self, model: Evaluators):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        m, image = self.model, batch["target"]
        size = m.config.size
        lm = F.smooth_l1_loss(m.landmarks(image) / size, batch["target_landmarks"] / size, beta=0.01)
        logits = m.config.scale * m.identity_embedding(image) @ F.normalize(m.identity_classes, dim=-1).T
        ident = F.cross_entropy(logits, batch["identity"])
        expr = F.cross_entropy(m.label_logits(image), batch["label"] + 1)
        return lm * 100 + ident + expr, {"landmarks": lm.item(), "identity": ident.item(), "expression": expr.item()}


def train_evaluators(images: dict, out_dir, config, labels, progress: bool = True, cpu: bool = True,
                     evaluator_config: EvaluatorConfig | None = None):
    """Train the evaluators on ``images`` (a portrait dict of the training identities only)."""
    from render.neural.training import fit

    size = int(images["rgb"].shape[1])
    base = evaluator_config or EvaluatorConfig(size=size)
    identities = int(images["identity"].max()) + 1
    torch.manual_seed(config.seed)
    model = Evaluators(EvaluatorConfig(**{**base.__dict__, "size": size, "identities": identities,
                                          "labels": tuple(labels)}))
    dataset = PortraitPairs(images, identity="other")
    return fit(out_dir, EvaluatorLoss(model), dataset, config, lambda d, m: m.save_pretrained(d), KIND,
               progress=progress, cpu=cpu)
