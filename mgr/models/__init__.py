from .classifier import MODELS, Classifier, ResNet18, SmallCNN, build_classifier
from .generator import Discriminator, Generator

__all__ = ["MODELS", "Classifier", "ResNet18", "SmallCNN", "build_classifier", "Discriminator", "Generator"]
