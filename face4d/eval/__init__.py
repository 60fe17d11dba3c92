"""Evaluation of generated sequences (§5): the independent classifier (IC), its accuracy and FID."""
from face4d.eval.classifier import ICConfig, IndependentClassifier, ic_loss
from face4d.eval.metrics import accuracy, classify, evaluate_sequences, frechet_distance, label_indices

__all__ = ["ICConfig", "IndependentClassifier", "accuracy", "classify", "evaluate_sequences", "frechet_distance",
           "ic_loss", "label_indices"]
