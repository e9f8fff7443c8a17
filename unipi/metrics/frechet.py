"""Fréchet distance between two sets of features: FID on frames, FVD on clips.

Each set is summarised by a Gaussian (mean ``mu``, covariance ``S``) of its feature
vectors, and the distance between the two Gaussians is (Dowson & Landau 1982)::

    d^2 = ||mu_1 - mu_2||^2 + Tr(S_1) + Tr(S_2) - 2 Tr((S_1 S_2)^{1/2})

The trace of the square root is computed as TF-GAN (the original FVD code) does, from
a symmetric matrix: ``Tr((S_1 S_2)^{1/2}) = Tr((R S_2 R)^{1/2})`` with ``R = S_1^{1/2}``,
both square roots from ``scipy.linalg.eigh`` with round-off negatives set to zero. That
stays real and finite when the covariances are singular (fewer samples than feature
dimensions), where ``scipy.linalg.sqrtm(S_1 @ S_2)`` may return complex values. The
result is clipped at 0 (round-off may leave ``-1e-12`` for identical sets).

An estimate from N samples of D-dimensional features is biased upward, strongly so when
N < D (the covariance has rank N - 1 at most): a ``FewSamplesWarning`` says so, and the
counts go into every report so that numbers are compared at equal N only. From samples
with N, M < D the same trace is computed exactly in sample space (the nuclear norm of
the (N, M) cross-Gram matrix), which is far cheaper than two (D, D) decompositions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg


class FewSamplesWarning(UserWarning):
    """Fewer samples than feature dimensions: the Fréchet distance is biased upward."""


@dataclass(frozen=True)
class FeatureStats:
    """Gaussian summary of N feature vectors: mean (D,), covariance (D, D), float64."""

    mean: np.ndarray
    cov: np.ndarray
    count: int

    @classmethod
    def from_features(cls, features, name: str = "features") -> "FeatureStats":
        """features: (N, D), N >= 2; the covariance is the unbiased one (N - 1)."""
        x = _features(features, name)
        return cls(x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], -1), len(x))

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negatives -> 0)."""
    sym = (matrix + matrix.T) / 2
    values, vectors = scipy.linalg.eigh(sym)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``Tr((S_1 S_2)^{1/2})`` for covariances S_1, S_2 (D, D), via ``R S_2 R``."""
    root = _sqrt_psd(np.asarray(sigma1, dtype=np.float64))
    inner = root @ np.asarray(sigma2, dtype=np.float64) @ root
    values = scipy.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2); finite and >= 0.

    Args:
        mu1, mu2: means (D,); sigma1, sigma2: covariances (D, D), symmetric PSD.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or \
            sigma2.shape != (d, d):
        raise ValueError(f"frechet_distance: shapes {mu1.shape}, {sigma1.shape}, "
                         f"{mu2.shape}, {sigma2.shape} do not describe two D-dim Gaussians")
    arrays = (mu1, mu2, sigma1, sigma2)
    if not all(np.isfinite(a).all() for a in arrays):
        raise ValueError("frechet_distance: means or covariances contain NaN or inf")
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
                  - 2.0 * trace_sqrt_product(sigma1, sigma2))
    if not np.isfinite(value):
        raise FloatingPointError(f"frechet_distance is not finite ({value}); features too "
                                 "large for float64?")
    return max(value, 0.0)


def frechet_distance_from_features(real, generated, name: str = "Fréchet distance") -> float:
    """Fréchet distance between feature sets real (N, D) and generated (M, D).

    Warns (``FewSamplesWarning``) when N or M is below D; then both covariances have
    low rank and the trace term is computed in sample space (``low_rank_trace_sqrt``).
    """
    x = _features(real, f"{name}: real features")
    y = _features(generated, f"{name}: generated features")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{name}: feature dimensions differ ({x.shape[1]} vs {y.shape[1]})")
    check_sample_count(min(len(x), len(y)), x.shape[1], name)
    if max(len(x), len(y)) < x.shape[1]:
        diff = x.mean(axis=0) - y.mean(axis=0)
        xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
        traces = (xc * xc).sum() / (len(x) - 1) + (yc * yc).sum() / (len(y) - 1)
        return max(float(diff @ diff + traces - 2.0 * low_rank_trace_sqrt(xc, yc)), 0.0)
    a, b = FeatureStats.from_features(x, name), FeatureStats.from_features(y, name)
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


def low_rank_trace_sqrt(xc: np.ndarray, yc: np.ndarray) -> float:
    """``Tr((S_1 S_2)^{1/2})`` from centred samples xc (N, D), yc (M, D).

    With ``S_1 = xc^T xc / (N - 1)`` and ``S_2 = yc^T yc / (M - 1)``, the non-zero
    eigenvalues of ``S_1 S_2`` are those of ``K K^T / ((N - 1)(M - 1))``, ``K = xc yc^T``
    (N, M), so the trace is K's nuclear norm over ``sqrt((N - 1)(M - 1))``: exact, and an
    (N, M) SVD instead of two (D, D) eigendecompositions.
    """
    singular = scipy.linalg.svdvals(xc @ yc.T)
    return float(singular.sum() / np.sqrt((len(xc) - 1) * (len(yc) - 1)))


def _features(features, name: str) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name}: expected features (N, D) with N >= 2, got shape "
                         f"{x.shape}; score more frames or clips")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: features contain NaN or inf; check the feature network")
    return x


def check_sample_count(count: int, dim: int, name: str) -> bool:
    """Warn when ``count`` samples of ``dim``-d features are too few; True if so."""
    if count >= dim:
        return False
    warnings.warn(
        f"{name}: {count} samples < {dim} feature dimensions; the covariance is singular "
        "and the distance is biased upward. Compare only at equal sample counts, or score "
        "more episodes.", FewSamplesWarning, stacklevel=3)
    return True
