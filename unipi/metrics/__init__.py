"""Video quality of a planner: FID (per frame), FVD (per clip) and CLIPScore.

    unipi metrics --model DIR --episodes 16 --fvd-weights i3d_torchscript.pt \\
        --clip-model clip-vit-base-patch32 --out outputs/metrics

``inputs`` converts uint8 / float frames explicitly, ``frechet`` holds the distance,
``networks`` the feature networks (local weights only), ``video_metrics`` compares a
model's plans with scripted-expert demonstrations from the evaluation seeds.
"""

from unipi.metrics.frechet import (
    FeatureStats,
    FewSamplesWarning,
    frechet_distance,
    frechet_distance_from_features,
)
from unipi.metrics.inputs import to_unit_float
from unipi.metrics.networks import ClipScorer, I3DFeatures, InceptionFeatures, MissingWeightsError

__all__ = [
    "ClipScorer",
    "FeatureStats",
    "FewSamplesWarning",
    "I3DFeatures",
    "InceptionFeatures",
    "MissingWeightsError",
    "frechet_distance",
    "frechet_distance_from_features",
    "to_unit_float",
]
