"""Folders of images as model inputs: list the files, decode and preprocess them into the batch
a single-input image model expects.

A folder is either flat (images only: calibration) or holds one sub-folder per class (labels
0..K-1 in the sub-folders' sorted name order, as torchvision's ImageFolder numbers them). Pillow
is an optional extra and is imported only when images are actually decoded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxprune.calib.data import InputSpec, calibration_from_arrays, subset_indices
from onnxprune.errors import CalibrationError, ConfigError, first_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_ARRAY_SUFFIXES = (".npy", ".npz")
LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes a model input: ``x = (pixels * scale - mean) / std`` per channel.

    Attributes
    ----------
    size : (height, width) to resize every image to (bilinear), an int for a square, or a string
        "32", "28,28" or "28x28". None: no resizing; the images must then have the model input's
        height and width (or, for dynamic ones, all the same size).
    scale : multiplies the 0..255 pixel values; a string "a/b" multiplies by a, then divides by b,
        so the default "1/255" computes exactly ``x / 255`` as the usual NumPy preprocessing does
        (bit for bit, which keeps a folder and the equivalent .npy giving the same pruned model).
    mean, std : one value for all channels or one per channel (RGB order), or a comma-separated string.
    layout : "NCHW" (default) or "NHWC". The model input's channel count in that layout chooses
        RGB (3) or grayscale (1) decoding.
    """

    size: int | tuple[int, int] | str | None = None
    scale: float | str = "1/255"
    mean: float | Sequence[float] | str = 0.0
    std: float | Sequence[float] | str = 1.0
    layout: str = "NCHW"
    _factors: tuple[float, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        set_("size", _parse_size(self.size))
        set_("mean", _parse_floats(self.mean, "mean"))
        set_("std", _parse_floats(self.std, "std"))
        set_("layout", str(self.layout).upper())
        set_("_factors", _parse_scale(self.scale))
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be NCHW or NHWC, got '{self.layout}'")
        if not all(s > 0 for s in self.std):
            raise ConfigError(f"std must be > 0, got {','.join(map(str, self.std))}")

    def fit(self, spec: InputSpec) -> tuple[int, tuple[int, int] | None]:
        """(channels, (height, width) or None when free) of the model input this preprocessing feeds."""
        shape = "(" + ", ".join(["N"] + ["?" if d is None else str(d) for d in spec.shape[1:]]) + ")"
        if len(spec.shape) != 4:
            raise CalibrationError(f"model input '{spec.name}' has shape {shape}; images need a 4-D {self.layout} input")
        channel_axis, spatial = (1, (2, 3)) if self.layout == "NCHW" else (3, (1, 2))
        channels = spec.shape[channel_axis]
        if channels not in (1, 3):
            other = LAYOUTS[1 - LAYOUTS.index(self.layout)]
            hint = f"; is it {other} (--layout {other})?" if spec.shape[4 - channel_axis] in (1, 3) else ""
            raise CalibrationError(f"model input '{spec.name}' has shape {shape}: in layout {self.layout} that is "
                                   f"{channels if channels else 'a dynamic number of'} channels, but images give "
                                   f"1 (grayscale) or 3 (RGB){hint}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise CalibrationError(f"{name} has {len(values)} values but model input '{spec.name}' has "
                                       f"{channels} channel(s); give 1 or {channels}")
        model_size = tuple(spec.shape[a] for a in spatial)
        if self.size is not None and any(m is not None and m != s for m, s in zip(model_size, self.size)):
            raise CalibrationError(f"size {self.size[0]}x{self.size[1]} (--size) does not fit model input "
                                   f"'{spec.name}' of shape {shape}")
        return channels, self.size or (None if None in model_size else model_size)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """Scale and normalise decoded pixels (H, W, C) in place, in float32; return them in the layout."""
        numerator, denominator = self._factors
        if numerator != 1:
            pixels *= np.float32(numerator)
        if denominator != 1:
            pixels /= np.float32(denominator)
        pixels -= np.asarray(self.mean, dtype=np.float32)
        pixels /= np.asarray(self.std, dtype=np.float32)
        return pixels.transpose(2, 0, 1) if self.layout == "NCHW" else pixels


@dataclass(frozen=True)
class ImageFolder:
    """The image files of a folder in a fixed order: by class sub-folder name, then by file name."""

    root: Path
    files: list[Path]
    labels: np.ndarray | None  # int64 per file (index into classes); None for a flat folder
    classes: list[str]


def check_preprocessing(preprocessing: Preprocessing | None, *sources) -> None:
    """Refuse image preprocessing when none of the data sources is an image folder: silently
    ignoring it would let a user believe their arrays were normalised."""
    paths = [s for s in sources if isinstance(s, (str, os.PathLike))]
    if preprocessing is not None and not any(is_image_folder(s) for s in paths):
        raise ConfigError("image preprocessing (--size, --mean, --std, --scale, --layout) applies to image "
                          "folders only, and none of the data given is one")


def is_image_folder(path: str | os.PathLike) -> bool:
    """True for a directory of images or class sub-folders (one holding .npy/.npz files is an array folder)."""
    path = Path(path)
    if not path.is_dir():
        return False
    entries = _visible(path)
    if any(p.is_file() and p.suffix.lower() in _ARRAY_SUFFIXES for p in entries):
        return False
    return any(p.is_dir() or p.suffix.lower() in IMAGE_SUFFIXES for p in entries)


def scan_folder(root: str | os.PathLike) -> ImageFolder:
    """List a flat folder of images, or a folder with one sub-folder of images per class."""
    root = Path(root)
    entries = _visible(root)
    images = _images(entries)
    classes = sorted(p.name for p in entries if p.is_dir())
    if images and classes:
        raise CalibrationError(f"image folder '{root}' mixes images ({images[0].name}, ...) with sub-folders "
                               f"({classes[0]}, ...); use either a flat folder or one sub-folder per class")
    if not classes:
        if not images:
            raise CalibrationError(f"image folder '{root}' has no {'/'.join(IMAGE_SUFFIXES)} files")
        return ImageFolder(root, images, None, [])
    files, labels = [], []
    for label, name in enumerate(classes):
        in_class = _images(_visible(root / name))
        if not in_class:
            raise CalibrationError(f"class folder '{root / name}' has no {'/'.join(IMAGE_SUFFIXES)} files; "
                                   f"remove it or add images (labels are the sorted sub-folder names)")
        files += in_class
        labels += [label] * len(in_class)
    return ImageFolder(root, files, np.asarray(labels, dtype=np.int64), classes)


def read_images(files: Sequence[Path], spec: InputSpec, prep: Preprocessing) -> np.ndarray:
    """Decode and preprocess ``files`` into one float32 batch for the model input ``spec``.

    Images are decoded one at a time straight into the preallocated batch, so memory holds the
    batch and a single decoded image.
    """
    image_lib = _pillow()
    channels, size = prep.fit(spec)
    mode = "RGB" if channels == 3 else "L"
    batch, wanted = None, "the model input needs"
    for index, file in enumerate(files):
        pixels = _decode(image_lib, file, mode, prep.size)
        if size is None:  # dynamic model dims and no --size: the first image sets the size
            size, wanted = pixels.shape[:2], f"the first image, {files[0].name}, is"
        if pixels.shape[:2] != tuple(size):
            raise CalibrationError(f"{file}: image is {pixels.shape[0]}x{pixels.shape[1]} (HxW) but {wanted} "
                                   f"{size[0]}x{size[1]}; pass --size {size[0]},{size[1]} to resize")
        sample = prep.apply(pixels)
        if batch is None:
            batch = np.empty((len(files),) + sample.shape, dtype=np.float32)
        batch[index] = sample
    return batch


def load_image_calibration(root: str | os.PathLike, specs: list[InputSpec], prep: Preprocessing | None, *,
                           max_samples: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Calibration feeds from an image folder (labels ignored); the subset is drawn before decoding,
    with the same rows as :func:`onnxprune.calib.data.load_calibration` draws from an array."""
    folder = scan_folder(root)
    spec = _single_input(specs, folder.root)
    idx = subset_indices(len(folder.files), max_samples, seed)
    files = folder.files if idx is None else [folder.files[i] for i in idx]
    batch = read_images(files, spec, prep or Preprocessing())
    return calibration_from_arrays({spec.name: batch}, specs, where=str(folder.root))


def load_labelled_images(root: str | os.PathLike, specs: list[InputSpec],
                         prep: Preprocessing | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(feeds, labels) from a folder with one sub-folder per class."""
    folder = scan_folder(root)
    spec = _single_input(specs, folder.root)
    if folder.labels is None:
        raise CalibrationError(f"image folder '{folder.root}' is flat; evaluation needs one sub-folder per class "
                               f"(label = index in the sorted sub-folder names)")
    batch = read_images(folder.files, spec, prep or Preprocessing())
    return calibration_from_arrays({spec.name: batch}, specs, where=str(folder.root)), folder.labels


def _single_input(specs: list[InputSpec], root: Path) -> InputSpec:
    if len(specs) != 1:
        raise CalibrationError(f"image folder '{root}': the model has {len(specs)} inputs; images feed "
                               f"single-input models only (use an .npz keyed by input name)")
    return specs[0]


def _visible(folder: Path) -> list[Path]:
    # Hidden entries (.DS_Store, .ipynb_checkpoints) are never data.
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _images(entries: list[Path]) -> list[Path]:
    return [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def _decode(image_lib, file: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """One image as float32 (H, W, C) pixels in 0..255, converted to ``mode`` and resized if asked."""
    try:
        with image_lib.open(file) as image:
            image = image.convert(mode)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), image_lib.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32)
    except (OSError, ValueError, SyntaxError, EOFError, image_lib.DecompressionBombError) as exc:
        raise CalibrationError(f"{file}: cannot read as an image ({first_line(exc)})") from None
    return pixels if pixels.ndim == 3 else pixels[:, :, None]


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise CalibrationError("reading images needs Pillow: pip install 'onnxprune[images]'") from None
    return Image


def _parse_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, str):
        parts = [p for p in re.split(r"[,x×\s]+", size.strip().lower()) if p]
    else:
        parts = list(size) if isinstance(size, Sequence) else [size]
    try:
        dims = [int(p) for p in parts]
    except (TypeError, ValueError):
        dims = []
    if len(dims) == 1:
        dims *= 2
    if len(dims) != 2 or min(dims) < 1 or any(str(p).strip() != str(d) for p, d in zip(parts, dims)):
        raise ConfigError(f"size must be HEIGHT,WIDTH or one number for a square (positive integers), got '{size}'")
    return dims[0], dims[1]


def _parse_floats(values, name: str) -> tuple[float, ...]:
    parts = values.split(",") if isinstance(values, str) else list(values) if isinstance(values, Sequence) else [values]
    try:
        floats = tuple(float(v) for v in parts)
    except (TypeError, ValueError):
        floats = ()
    if not floats or not all(np.isfinite(floats)):
        raise ConfigError(f"{name} must be one number or comma-separated numbers (one per channel), got '{values}'")
    return floats


def _parse_scale(scale) -> tuple[float, float]:
    text = str(scale).strip()
    try:
        numerator, _, denominator = text.partition("/")
        factors = float(numerator), float(denominator) if denominator else 1.0
    except ValueError:
        factors = (float("nan"), 1.0)
    if not all(np.isfinite(factors)) or factors[0] <= 0 or factors[1] <= 0:
        raise ConfigError(f"scale must be a positive number or a fraction such as 1/255, got '{scale}'")
    return factors
