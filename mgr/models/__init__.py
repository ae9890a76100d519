from .classifier import MODELS, Classifier, ResNet18, SmallCNN, build_classifier
from .co_learner import CO_LEARNER_ARCHS, CoLearner
from .generator import Discriminator, Generator

__all__ = ["MODELS", "Classifier", "ResNet18", "SmallCNN", "build_classifier", "CO_LEARNER_ARCHS", "CoLearner",
           "Discriminator", "Generator"]
