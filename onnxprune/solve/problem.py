"""One layer's regression, reduced to its sufficient statistics, and its normalisation.

A layer maps an input feature vector x (d values: for a Conv, one C_in*kh*kw patch; for a Gemm,
its input row) to a target y (m values). Everything the solver needs is the centred second
moments G = cov(x), C = cov(y, x) and the per-output variances of y, plus which input channel
each feature belongs to. Nothing here knows about ONNX.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A channel whose mean feature variance is below this fraction of the largest channel's is
# constant on the calibration data: it carries no information, its contribution is a constant
# that the intercept absorbs, so it is removed without asking the solver.
DEAD_CHANNEL_RTOL = 1e-10
FLOAT32_ABOVE = 1024  # features


@dataclass(frozen=True)
class LayerProblem:
    """Centred statistics of one regression y ~ Q x + b.

    Attributes
    ----------
    gram : (d, d) covariance of the input features.
    cross : (m, d) covariance between targets and features.
    target_var : (m,) variance of each target.
    x_mean, y_mean : (d,) and (m,) means, for the intercept.
    channel_of_feature : (d,) int, the input channel (0..n_channels-1) of each feature.
    n_channels : number of input channels.
    n_samples : number of samples the statistics were accumulated over.
    """

    gram: np.ndarray
    cross: np.ndarray
    target_var: np.ndarray
    x_mean: np.ndarray
    y_mean: np.ndarray
    channel_of_feature: np.ndarray
    n_channels: int
    n_samples: int

    @property
    def n_features(self) -> int:
        return self.gram.shape[0]

    @property
    def n_targets(self) -> int:
        return self.cross.shape[0]


@dataclass(frozen=True)
class NormalisedProblem:
    """A LayerProblem rescaled so that one (eps_entropy, eps_l2) pair transfers across layers.

    Each input channel is scaled to unit mean feature variance and the (weighted) targets to unit
    mean variance. ``feature_scale`` and ``target_scale`` undo it: Q_orig = Q / target_scale[:, None]
    / feature_scale[None, :].
    """

    gram: np.ndarray
    cross: np.ndarray
    target_var: np.ndarray
    channel_of_feature: np.ndarray
    n_channels: int
    live_channels: np.ndarray  # bool (n_channels,): False for constant (dead) channels
    feature_scale: np.ndarray
    target_scale: np.ndarray


def channel_variances(problem: LayerProblem) -> np.ndarray:
    """Mean feature variance of each input channel."""
    diag = np.diag(problem.gram)
    sums = np.bincount(problem.channel_of_feature, weights=diag, minlength=problem.n_channels)
    counts = np.bincount(problem.channel_of_feature, minlength=problem.n_channels)
    return sums / np.maximum(counts, 1)


def normalise(problem: LayerProblem, target_weights: np.ndarray | None = None) -> NormalisedProblem:
    """Rescale features per channel and targets globally (optionally weighting each target).

    ``target_weights`` says how much an error on each target matters downstream (e.g. the
    BatchNormalization gain that follows a Conv); errors are measured on ``weight * y``.
    """
    ch_var = channel_variances(problem)
    live = ch_var > DEAD_CHANNEL_RTOL * max(float(ch_var.max(initial=0.0)), np.finfo(float).tiny)
    ch_scale = np.where(live, 1.0 / np.sqrt(np.where(live, ch_var, 1.0)), 0.0)
    feature_scale = ch_scale[problem.channel_of_feature]

    weights = np.ones(problem.n_targets) if target_weights is None else np.abs(target_weights)
    weighted_var = weights**2 * problem.target_var
    total = float(weighted_var.mean())
    y_scale = 1.0 / np.sqrt(total) if total > 0 else 1.0
    target_scale = weights * y_scale

    # Large selection problems are solved in float32 (3x faster factorisations on this kind of
    # machine); the ridge keeps them well conditioned and the final refit is float64.
    dtype = np.float32 if problem.n_features > FLOAT32_ABOVE else np.float64
    gram = (problem.gram * feature_scale[:, None] * feature_scale[None, :]).astype(dtype)
    cross = (problem.cross * target_scale[:, None] * feature_scale[None, :]).astype(dtype)
    return NormalisedProblem(
        gram=gram,
        cross=cross,
        target_var=weighted_var * y_scale**2,
        channel_of_feature=problem.channel_of_feature,
        n_channels=problem.n_channels,
        live_channels=live,
        feature_scale=feature_scale,
        target_scale=target_scale,
    )
