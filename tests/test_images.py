"""Image folders as calibration data: listing, preprocessing, the same model as the equivalent .npy, one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from builders import conv_bn_relu_chain, lenet_like
from onnxprune.calib.data import InputSpec, load_calibration
from onnxprune.calib.images import Preprocessing, is_image_folder, load_image_calibration, read_images, scan_folder
from onnxprune.cli import main
from onnxprune.errors import CalibrationError, ConfigError

Image = pytest.importorskip("PIL.Image")

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
RGB_SPEC = InputSpec("input", (None, 3, 8, 8), np.dtype(np.float32))


def _write_images(folder: Path, pixels: np.ndarray, names: list[str] | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(pixels):
        path = folder / (names[i] if names else f"{i:03d}.png")
        Image.fromarray(image.squeeze()).save(path)  # PNG: lossless, so the pixels are exactly these
        paths.append(path)
    return paths


def _pixels(n: int, h: int = 8, w: int = 8, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def _reference(pixels: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    """The usual NumPy preprocessing (tools/datasets.py): (x/255 - mean) / std, NHWC -> NCHW, float32."""
    x = (pixels.astype(np.float32) / np.float32(255.0) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# --- preprocessing options -------------------------------------------------------------------


@pytest.mark.parametrize("size, expected", [("32", (32, 32)), ("28,20", (28, 20)), ("28x20", (28, 20)),
                                            (16, (16, 16)), ((4, 6), (4, 6)), (None, None)])
def test_size_forms(size, expected):
    assert Preprocessing(size=size).size == expected


@pytest.mark.parametrize("options, message", [
    ({"size": "0"}, "size must be"), ({"size": "a,b"}, "size must be"), ({"size": "1,2,3"}, "size must be"),
    ({"size": 2.5}, "size must be"), ({"scale": "0"}, "scale must be"), ({"scale": "1/x"}, "scale must be"),
    ({"mean": "0.1,,0.2"}, "mean must be"), ({"std": "1,0,1"}, "std must be > 0"), ({"std": "nan"}, "std must be"),
    ({"layout": "CHW"}, "layout must be"),
])
def test_bad_preprocessing_options(options, message):
    with pytest.raises(ConfigError, match=message):
        Preprocessing(**options)


def test_scale_fraction_is_bit_exact_division():
    pixels = _pixels(1)[0].astype(np.float32)
    by_fraction = Preprocessing(scale="1/255", layout="NHWC").apply(pixels.copy())
    assert np.array_equal(by_fraction, pixels / np.float32(255))
    doubled = Preprocessing(scale="2", layout="NHWC").apply(pixels.copy())
    assert np.array_equal(doubled, pixels * 2)


# --- folders -------------------------------------------------------------------------------------


def test_flat_and_class_folders_are_listed_in_sorted_order(tmp_path):
    _write_images(tmp_path / "flat", _pixels(3), ["b.png", "a.JPG", "c.bmp"])
    (tmp_path / "flat" / "notes.txt").write_text("ignored")
    (tmp_path / "flat" / ".hidden.png").write_bytes(b"ignored")
    flat = scan_folder(tmp_path / "flat")
    assert [p.name for p in flat.files] == ["a.JPG", "b.png", "c.bmp"] and flat.labels is None

    for cls, n in (("dog", 2), ("cat", 3)):
        _write_images(tmp_path / "classes" / cls, _pixels(n))
    classes = scan_folder(tmp_path / "classes")
    assert classes.classes == ["cat", "dog"]
    assert classes.labels.tolist() == [0, 0, 0, 1, 1]
    assert [p.parent.name for p in classes.files] == ["cat"] * 3 + ["dog"] * 2


def test_is_image_folder(tmp_path):
    assert not is_image_folder(tmp_path)  # empty
    _write_images(tmp_path / "imgs", _pixels(1))
    assert is_image_folder(tmp_path / "imgs")
    assert is_image_folder(tmp_path)  # a class sub-folder
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    assert not is_image_folder(tmp_path)  # arrays win: the existing .npy folder behaviour
    assert not is_image_folder(tmp_path / "x.npy")


def test_folder_equals_numpy_preprocessing_bit_for_bit(tmp_path):
    pixels = _pixels(20)
    _write_images(tmp_path / "imgs", pixels)
    prep = Preprocessing(mean=",".join(map(str, MEAN)), std=",".join(map(str, STD)))
    feeds = load_image_calibration(tmp_path / "imgs", [RGB_SPEC], prep)
    assert feeds["input"].dtype == np.float32 and feeds["input"].flags.c_contiguous
    assert np.array_equal(feeds["input"], _reference(pixels))

    # The same random subset of rows as the .npy path draws, decoded only for those files.
    np.save(tmp_path / "ref.npy", _reference(pixels))
    subset = load_image_calibration(tmp_path / "imgs", [RGB_SPEC], prep, max_samples=7, seed=3)
    assert np.array_equal(subset["input"], load_calibration(tmp_path / "ref.npy", [RGB_SPEC], max_samples=7, seed=3)["input"])


def test_nhwc_layout_and_grayscale(tmp_path):
    pixels = _pixels(4)
    files = _write_images(tmp_path / "imgs", pixels)
    nhwc = read_images(files, InputSpec("x", (None, 8, 8, 3), np.dtype(np.float32)), Preprocessing(layout="nhwc"))
    assert np.array_equal(nhwc, pixels.astype(np.float32) / np.float32(255))

    gray = read_images(files, InputSpec("x", (None, 1, 8, 8), np.dtype(np.float32)), Preprocessing(mean=0.5))
    luma = np.stack([np.asarray(Image.open(f).convert("L"), np.float32) for f in files])
    assert gray.shape == (4, 1, 8, 8)
    assert np.array_equal(gray[:, 0], luma / np.float32(255) - np.float32(0.5))


def test_resize_only_when_asked(tmp_path):
    files = _write_images(tmp_path / "imgs", _pixels(2, h=10, w=12))
    resized = read_images(files, RGB_SPEC, Preprocessing(size=8))
    assert resized.shape == (2, 3, 8, 8)
    with pytest.raises(CalibrationError, match=r"000\.png: image is 10x12 \(HxW\) but the model input needs 8x8; "
                                               r"pass --size 8,8"):
        read_images(files, RGB_SPEC, Preprocessing())
    free = InputSpec("x", (None, 3, None, None), np.dtype(np.float32))
    assert read_images(files, free, Preprocessing()).shape == (2, 3, 10, 12)  # dynamic dims: the images' size


def test_missing_pillow_says_how_to_install(tmp_path, monkeypatch):
    files = _write_images(tmp_path / "imgs", _pixels(1))
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes `from PIL import Image` raise ImportError
    with pytest.raises(CalibrationError, match=r"^reading images needs Pillow: pip install 'onnxprune\[images\]'$"):
        read_images(files, RGB_SPEC, Preprocessing())


# --- through the CLI ------------------------------------------------------------------------------


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_folder_and_npy_prune_identically(tmp_path):
    """Same images, same preprocessing: the same calibration array, so the same decisions and bytes."""
    model = conv_bn_relu_chain()
    onnx.save(model, tmp_path / "m.onnx")
    pixels = _pixels(24, seed=5)
    _write_images(tmp_path / "imgs", pixels)
    np.save(tmp_path / "calib.npy", _reference(pixels))
    common = ["--samples", 20, "--eps-l2", 1, "--max-iter", 5, "-q"]
    folder = _invoke(tmp_path / "m.onnx", tmp_path / "a.onnx", "--calib", tmp_path / "imgs", "--report",
                     tmp_path / "a.json", "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)), *common)
    array = _invoke(tmp_path / "m.onnx", tmp_path / "b.onnx", "--calib", tmp_path / "calib.npy", "--report",
                    tmp_path / "b.json", *common)
    assert folder.exit_code == 0 and array.exit_code == 0, folder.stderr + array.stderr
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    layers = [[(l["name"], l["channels_after"], l["in_channels_after"]) for l in json.loads(p.read_text())["layers"]]
              for p in (tmp_path / "a.json", tmp_path / "b.json")]
    assert layers[0] == layers[1]


def _folder(tmp, pixels=None, **kwargs):
    _write_images(tmp / "imgs", _pixels(4) if pixels is None else pixels, **kwargs)
    return tmp / "imgs"


def _corrupt(tmp):
    folder = _folder(tmp)
    (folder / "002.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return ["--calib", folder], "002.png: cannot read as an image"


def _mixed(tmp):
    folder = _folder(tmp)
    _write_images(folder / "cat", _pixels(1))
    return ["--calib", folder], "mixes images"


def _empty_class(tmp):
    _write_images(tmp / "imgs" / "cat", _pixels(1))
    (tmp / "imgs" / "dog").mkdir()
    (tmp / "imgs" / "dog" / "readme.txt").write_text("no images")
    return ["--calib", tmp / "imgs"], "class folder"


BAD = {
    "corrupt-image": _corrupt,
    "mixed-folder": _mixed,
    "empty-class": _empty_class,
    "wrong-size": lambda tmp: (["--calib", _folder(tmp, _pixels(4, h=9))], "image is 9x8 (HxW) but the model input needs 8x8"),
    "size-vs-model": lambda tmp: (["--calib", _folder(tmp), "--size", 16], "size 16x16 (--size) does not fit"),
    "wrong-layout": lambda tmp: (["--calib", _folder(tmp), "--layout", "NHWC"], "in layout NHWC that is 8 channels"),
    "mean-count": lambda tmp: (["--calib", _folder(tmp), "--mean", "0.1,0.2"], "mean has 2 values"),
    "bad-size-text": lambda tmp: (["--calib", _folder(tmp), "--size", "big"], "size must be"),
    "options-without-images": lambda tmp: (["--calib", tmp / "calib.npy", "--mean", "0.5"],
                                           "applies to image folders only"),
}


@pytest.mark.parametrize("make", BAD.values(), ids=BAD.keys())
def test_bad_image_input_one_error_line(tmp_path, make):
    onnx.save(conv_bn_relu_chain(), tmp_path / "m.onnx")
    np.save(tmp_path / "calib.npy", _reference(_pixels(4)))
    args, expected = make(tmp_path)
    out = tmp_path / "out.onnx"
    result = _invoke(tmp_path / "m.onnx", out, *args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error:") and expected in lines[0], result.stderr
    assert not out.exists()


def test_grayscale_model_from_rgb_files(tmp_path):
    """A 1-channel model reads RGB files as grayscale; --size resizes them to its input."""
    onnx.save(lenet_like(), tmp_path / "m.onnx")
    _folder(tmp_path, _pixels(12, h=20, w=20))
    result = _invoke(tmp_path / "m.onnx", tmp_path / "out.onnx", "--calib", tmp_path / "imgs", "--size", 12,
                     "--max-iter", 3, "-q")
    assert result.exit_code == 0, result.stderr
