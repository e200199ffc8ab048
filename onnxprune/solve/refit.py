"""Final weights for the kept channels: a least-squares refit on the pruned layer's own inputs.

Q_K = C_K (G_KK + ridge * mean(diag G_KK) * I)^-1 and b = y_mean - Q_K x_mean_K: each output row is
an independent ridge regression, so the result does not depend on how the targets were weighted
during selection. The small relative ridge keeps the solve defined when there are fewer samples
than features (the 2x2 maps at the end of VGG give 4 pixels per image).
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

from onnxprune.solve.problem import LayerProblem


def refit(problem: LayerProblem, keep_channels: np.ndarray, *, ridge: float,
          prior: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (Q, b): Q of shape (m, kept features) in feature order, b of shape (m,).

    With ``prior`` (m, all features), the ridge pulls Q towards prior[:, kept] instead of towards
    zero: Q = (C_K + r P_K)(G_KK + r I)^-1. The original layer's weights are a good prior (the
    pruned network's inputs are close to the original ones), and shrinking towards them instead
    of towards 0 keeps a refit from fitting the calibration noise where samples are few.
    """
    feats = np.flatnonzero(keep_channels[problem.channel_of_feature])
    gram = problem.gram[np.ix_(feats, feats)].copy()
    scale = float(np.mean(np.diag(gram))) if feats.size else 0.0
    gram[np.diag_indices_from(gram)] += ridge * scale + np.finfo(float).tiny
    cross = problem.cross[:, feats]
    if prior is not None:
        cross = cross + ridge * scale * prior[:, feats]
    try:
        q = linalg.cho_solve(linalg.cho_factor(gram, check_finite=False), cross.T, check_finite=False).T
    except linalg.LinAlgError:
        q = linalg.lstsq(gram, cross.T, check_finite=False)[0].T
    bias = problem.y_mean - q @ problem.x_mean[feats]
    return q, bias
