"""Data: the interchange format, the 18 labels, the dataset generator, real-data loaders, normalisation."""
from face4d.data.dataset import Dataset, build_dataset, import_dataset
from face4d.data.interchange import LandmarkSequences, load_sequences, save_sequences
from face4d.data.labels import LABEL_NAMES, LABELS, get_label, label_index
from face4d.data.normalize import LandmarkNormalizer
from face4d.data.synth import ExpressionSynthesizer, SynthConfig, sequence_vertices

__all__ = ["LABELS", "LABEL_NAMES", "Dataset", "ExpressionSynthesizer", "LandmarkNormalizer", "LandmarkSequences",
           "SynthConfig", "build_dataset", "get_label", "import_dataset", "label_index", "load_sequences",
           "save_sequences", "sequence_vertices"]
