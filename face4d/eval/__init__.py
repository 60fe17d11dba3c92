"""Evaluation of generated sequences (§5): the independent classifier (IC), its accuracy and FID."""
from face4d.eval.metrics import accuracy, classify, evaluate_sequences, frechet_distance, label_indices
from face4d.models.ic import ICConfig, IndependentClassifier

__all__ = ["ICConfig", "IndependentClassifier", "accuracy", "classify", "evaluate_sequences", "frechet_distance",
           "label_indices"]
