"""The networks of face4d, each with its config dataclass: the denoiser, the noise-aware classifiers
and text guide that steer sampling, the evaluation's independent classifier (``ic``), and the
transformer layers they share (``layers``). They take the diffusion timestep as an input; the
noise schedule lives in ``face4d.diffusion``, their losses in ``face4d.training``, and the kinds
a model directory can hold in ``face4d.checkpoint.MODEL_KINDS``."""
from face4d.models.classifier import Classifier, ClassifierConfig
from face4d.models.denoiser import Denoiser, DenoiserConfig
from face4d.models.ic import ICConfig, IndependentClassifier
from face4d.models.text_guide import TextGuide, TextGuideConfig

__all__ = ["Classifier", "ClassifierConfig", "Denoiser", "DenoiserConfig", "ICConfig", "IndependentClassifier",
           "TextGuide", "TextGuideConfig"]
