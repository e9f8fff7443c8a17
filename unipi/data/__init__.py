"""Demonstration datasets: the on-disk format, the collector and the readers."""

from unipi.data.format import DatasetFormatError, EpisodeRecord
from unipi.data.store import ClipDataset, Episode, EpisodeStore, PairDataset, clip_indices

__all__ = [
    "ClipDataset",
    "DatasetFormatError",
    "Episode",
    "EpisodeRecord",
    "EpisodeStore",
    "PairDataset",
    "clip_indices",
]
