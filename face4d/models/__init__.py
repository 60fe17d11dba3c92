"""Networks of face4d; schedule-free, the diffusion math lives in ``face4d.diffusion``."""
from face4d.models.classifier import Classifier, ClassifierConfig
from face4d.models.denoiser import Denoiser, DenoiserConfig
from face4d.models.text_guide import TextGuide, TextGuideConfig

__all__ = ["Classifier", "ClassifierConfig", "Denoiser", "DenoiserConfig", "TextGuide", "TextGuideConfig"]
