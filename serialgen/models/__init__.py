"""Torch models, built from configs or loaded from local folders; data, training loops and the lake stay outside."""

from serialgen.models.components import (
    Components,
    load_sd15_components,
    random_sd15_components,
    scratch_components,
    tiny_components,
)
from serialgen.models.fbdm import ForegroundBackgroundTokens
from serialgen.models.pixel_space import PixelShuffleAutoencoder
from serialgen.models.pose_guider import PoseGuider
from serialgen.models.reference_attention import ReferenceBank
from serialgen.models.rpim import ReferencePoseInjection
from serialgen.models.standardizer import Standardizer

__all__ = ["Components", "ForegroundBackgroundTokens", "PixelShuffleAutoencoder", "PoseGuider", "ReferenceBank",
           "ReferencePoseInjection", "Standardizer", "load_sd15_components", "random_sd15_components",
           "scratch_components", "tiny_components"]
