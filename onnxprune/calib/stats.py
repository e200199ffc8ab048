"""Streamed regression statistics of one layer: patches in, sufficient statistics out.

For a Conv, one sample is one output pixel: the input patch under the kernel (C*kh*kw features)
and the output vector there. Pixels are subsampled per image (bounding T), and the moments are
accumulated batch by batch in float64, so memory does not depend on the number of samples.
"""

from __future__ import annotations


import numpy as np

from onnxprune.ops import ConvGeometry
from onnxprune.solve.problem import LayerProblem


def extract_patches(x: np.ndarray, geometry: ConvGeometry, images: np.ndarray, rows: np.ndarray,
                    cols: np.ndarray) -> np.ndarray:
    """Patches (T, C*kh*kw) of x (N, C, H, W) at output pixels (images[t], rows[t], cols[t]).

    The feature order matches a Conv weight reshaped to (out, C*kh*kw). One gather of exactly the
    sampled taps: padding the whole batch first would copy every activation to read a few pixels
    of each image (with thousands of images, only 4 of a 32x32 map's pixels per image are sampled).
    """
    top, left = geometry.pads[0], geometry.pads[1]
    (kh, kw), (sh, sw), (dh, dw) = geometry.kernel, geometry.strides, geometry.dilations
    height, width = x.shape[2:]
    r = rows[:, None] * sh - top + np.arange(kh) * dh  # (T, kh) input rows under the kernel
    c = cols[:, None] * sw - left + np.arange(kw) * dw  # (T, kw)
    patches = x[images[:, None, None], :, np.clip(r, 0, height - 1)[:, :, None], np.clip(c, 0, width - 1)[:, None, :]]
    # patches is (T, kh, kw, C); the taps that fall in the padding read zeros.
    patches[~(((r >= 0) & (r < height))[:, :, None] & ((c >= 0) & (c < width))[:, None, :])] = 0
    return patches.transpose(0, 3, 1, 2).reshape(len(images), -1)


def sample_pixels(image_ids: np.ndarray, out_hw: tuple[int, int], per_image: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``per_image`` distinct output pixels of each image, drawn at random."""
    n_pixels = out_hw[0] * out_hw[1]
    k = min(per_image, n_pixels)
    if k == n_pixels:
        flat = np.tile(np.arange(n_pixels), len(image_ids))
    else:
        flat = np.argsort(rng.random((len(image_ids), n_pixels)), axis=1)[:, :k].reshape(-1)
    images = np.repeat(image_ids, k)
    return images, flat // out_hw[1], flat % out_hw[1]


class Moments:
    """Running sums of x, y, x x^T, y x^T and y^2, accumulated around a shift for accuracy.

    The shift (the first batch's means) keeps the float32 batch products from cancelling when
    activations have a large mean; the sums themselves are float64.
    """

    def __init__(self, n_features: int, n_targets: int) -> None:
        self.n = 0
        self.shift_x: np.ndarray | None = None
        self.shift_y: np.ndarray | None = None
        self.sum_x = np.zeros(n_features)
        self.sum_y = np.zeros(n_targets)
        self.sum_xx = np.zeros((n_features, n_features))
        self.sum_yx = np.zeros((n_targets, n_features))
        self.sum_yy = np.zeros(n_targets)

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        if self.shift_x is None:
            self.shift_x = x.mean(axis=0, dtype=np.float64).astype(np.float32)
            self.shift_y = y.mean(axis=0, dtype=np.float64).astype(np.float32)
        xs = np.ascontiguousarray(x - self.shift_x, dtype=np.float32)
        ys = np.ascontiguousarray(y - self.shift_y, dtype=np.float32)
        self.n += len(xs)
        self.sum_x += xs.sum(axis=0, dtype=np.float64)
        self.sum_y += ys.sum(axis=0, dtype=np.float64)
        self.sum_xx += xs.T @ xs
        self.sum_yx += ys.T @ xs
        self.sum_yy += np.einsum("ti,ti->i", ys, ys, dtype=np.float64)

    def problem(self, channel_of_feature: np.ndarray, n_channels: int) -> LayerProblem:
        if self.n == 0:
            raise ValueError("no samples were accumulated")
        mean_x, mean_y = self.sum_x / self.n, self.sum_y / self.n
        gram = self.sum_xx / self.n - np.outer(mean_x, mean_x)
        gram = (gram + gram.T) / 2
        return LayerProblem(
            gram=gram,
            cross=self.sum_yx / self.n - np.outer(mean_y, mean_x),
            target_var=np.maximum(self.sum_yy / self.n - mean_y**2, 0.0),
            x_mean=mean_x + self.shift_x,
            y_mean=mean_y + self.shift_y,
            channel_of_feature=np.asarray(channel_of_feature),
            n_channels=n_channels,
            n_samples=self.n,
        )
