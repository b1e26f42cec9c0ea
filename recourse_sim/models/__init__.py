"""Classifiers with the scikit-learn contract. ``MODELS`` maps a scenario name to a class."""

from __future__ import annotations

from recourse_sim.models.classifier import DeepEnsemble, LogisticRegression, MLPClassifier, TorchClassifier
from recourse_sim.models.jem import JEMClassifier
from recourse_sim.models.network import AdamSettings, StackedMLP
from recourse_sim.registry import Registry

MODELS: Registry = Registry("model")
MODELS.register("logistic_regression", LogisticRegression)
MODELS.register("mlp", MLPClassifier)
MODELS.register("deep_ensemble", DeepEnsemble)
MODELS.register("jem", JEMClassifier)

__all__ = [
    "MODELS", "AdamSettings", "DeepEnsemble", "JEMClassifier", "LogisticRegression", "MLPClassifier", "StackedMLP",
    "TorchClassifier",
]
