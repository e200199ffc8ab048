"""Load calibration inputs for an ONNX model and validate them once, at the boundary.

Everything downstream (activation statistics, batching through onnxruntime) assumes the arrays
returned here have the model's dtype and rank, agree on the sample count and hold finite values,
so every check lives here and fails with a one-line :class:`CalibrationError`.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
from onnx import helper

from onnxprune.errors import CalibrationError, first_line
from onnxprune.runtime import declared_batch

logger = logging.getLogger(__name__)

_SUFFIXES = (".npy", ".npz")
# np.load raises any of these for truncated, corrupt or pickled content.
LOAD_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, zlib.error)


@dataclass(frozen=True)
class InputSpec:
    """One graph input the calibration data must feed."""

    name: str
    shape: tuple[int | None, ...]  # None = dynamic dim; dim 0 is the batch axis
    dtype: np.dtype


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """List the graph inputs that calibration data has to provide.

    Parameters
    ----------
    model : onnx.ModelProto
        The model to calibrate.

    Returns
    -------
    list of InputSpec
        One spec per graph input that is not an initializer (older exporters list weights as
        inputs too), in graph order. Dims given as ``dim_param`` or unknown become ``None``.

    Raises
    ------
    CalibrationError
        If an input is not a tensor or has no shape, since it could not be validated.
    ModelError
        If the inputs fix different batch sizes, which no split of the samples could feed.
    """
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        if not vi.type.HasField("tensor_type"):
            raise CalibrationError(f"model input '{vi.name}' is not a tensor; only tensor inputs can be calibrated")
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            raise CalibrationError(f"model input '{vi.name}' has no shape; re-export the model with input shapes")
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        specs.append(InputSpec(vi.name, shape, dtype))
    declared_batch(spec.shape for spec in specs)  # refused here, before any work
    return specs


def load_calibration(
    path: str | os.PathLike, specs: list[InputSpec], *, max_samples: int | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Load calibration samples and check that they fit the model.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npy`` file (single-input models only), a ``.npz`` file keyed by input name (or
        holding exactly one array, for a single-input model), or a directory whose ``*.npy`` /
        ``*.npz`` files (non-recursive, sorted by name) are concatenated along axis 0.
    specs : list of InputSpec
        The model inputs, from :func:`input_specs`.
    max_samples : int, optional
        If given and there are more samples, keep a random subset of this many rows (the same
        rows for every input, in their original order).
    seed : int, default 0
        Seed for the subset draw, so runs are reproducible.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{input name: C-contiguous array of shape (N, ...)}`` in the model's dtype.

    Raises
    ------
    CalibrationError
        On a missing/unreadable source, missing inputs, wrong dtype kind, rank or fixed dims,
        zero or unequal sample counts, NaN/Inf values, or ``max_samples < 1``.

    Notes
    -----
    A fixed batch dim in the model is not enforced: every onnxruntime run feeds batches of exactly
    that size (onnxprune.runtime.run_batches), the last one padded.
    """
    if max_samples is not None and max_samples < 1:
        raise CalibrationError(f"max_samples must be at least 1, got {max_samples}")
    if not specs:
        raise CalibrationError("the model has no inputs to calibrate")
    src = Path(path)
    if not src.exists():
        raise CalibrationError(f"calibration path '{src}' does not exist")
    if src.is_dir():
        entries = sorted(p for p in src.iterdir() if p.is_file())
        files = [p for p in entries if p.suffix.lower() in _SUFFIXES]
        if not entries:
            raise CalibrationError(f"calibration directory '{src}' is empty; put .npy/.npz files or images in it")
        if not files:
            found = ", ".join(p.name for p in entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise CalibrationError(f"calibration directory '{src}' has no .npy/.npz files or images (found: {found})")
    elif src.suffix.lower() in _SUFFIXES:
        files = [src]
    else:
        raise CalibrationError(f"calibration path '{src}' is not a .npy file, .npz file or directory")

    parts: dict[str, list[np.ndarray]] = {s.name: [] for s in specs}
    for file in files:
        loaded = {spec.name: _check_array(arr, spec, file) for spec, arr in zip(specs, _read_file(file, specs))}
        # Checked per file: equal totals could still hide rows that are misaligned between inputs.
        counts = {name: arr.shape[0] for name, arr in loaded.items()}
        if len(set(counts.values())) > 1:
            detail = ", ".join(f"'{k}': {v}" for k, v in counts.items())
            raise CalibrationError(f"{file.name}: inputs have different sample counts ({detail}); they must match")
        for name, arr in loaded.items():
            # Dynamic non-batch dims must still agree across files, or concatenation is meaningless.
            if parts[name] and arr.shape[1:] != parts[name][0].shape[1:]:
                raise CalibrationError(
                    f"{file.name}: input '{name}' has sample shape {arr.shape[1:]}, "
                    f"but {files[0].name} has {parts[name][0].shape[1:]}; all files must agree"
                )
            parts[name].append(arr)

    # One file (the usual case) is used as read: concatenating would hold the inputs twice at once.
    data = {name: np.concatenate(arrs, axis=0) if len(arrs) > 1 else arrs[0] for name, arrs in parts.items()}
    n = next(iter(data.values())).shape[0]
    if n == 0:
        raise CalibrationError(f"calibration data in '{src}' has zero samples")
    data = _subset(data, max_samples, seed)
    logger.debug("calibration from %s (%d file(s)): %s", src, len(files), {k: v.shape for k, v in data.items()})
    return data


def calibration_from_arrays(arrays: np.ndarray | Mapping[str, np.ndarray], specs: list[InputSpec], *,
                            max_samples: int | None = None, seed: int = 0,
                            where: str = "calibration arrays") -> dict[str, np.ndarray]:
    """Validate in-memory calibration inputs exactly as :func:`load_calibration` validates files.

    ``arrays`` is one array (single-input models) or a mapping from graph input name to array;
    ``where`` starts every error message (evaluation data and decoded image folders name their source).
    """
    if max_samples is not None and max_samples < 1:
        raise CalibrationError(f"max_samples must be at least 1, got {max_samples}")
    if not isinstance(arrays, Mapping):
        if len(specs) != 1:
            raise CalibrationError(f"the model has {len(specs)} inputs; pass a mapping from input name to array")
        arrays = {specs[0].name: arrays}
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        raise CalibrationError(f"{where}: missing input '{missing[0]}' (has {', '.join(map(repr, arrays))})")
    data = {s.name: _check_array(np.asarray(arrays[s.name]), s, Path(where)) for s in specs}
    counts = {arr.shape[0] for arr in data.values()}
    if len(counts) > 1:
        raise CalibrationError(f"{where}: inputs have different sample counts {sorted(counts)}")
    if counts == {0}:
        raise CalibrationError(f"{where}: zero samples")
    return _subset(data, max_samples, seed)


def subset_indices(n: int, max_samples: int | None, seed: int) -> np.ndarray | None:
    """The rows of a random subset of max_samples out of n, ascending; None when all n are used.

    Image folders draw the same rows from their file list, so a folder and the .npy holding the
    same images in the same order calibrate on the same samples.
    """
    if max_samples is None or n <= max_samples:
        return None
    # Sorted indices keep the original order, so results do not depend on draw order.
    return np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))


class CalibrationSets(NamedTuple):
    """Calibration samples in two disjoint parts: ``fit`` for the statistics, ``held`` held out from
    them to measure the pruned model's fidelity (empty arrays when none could be spared)."""

    fit: dict[str, np.ndarray]
    held: dict[str, np.ndarray]


# Held-out samples carved out of the statistics' samples are at most this fraction of them.
HELD_OUT_SHARE = 4
# Held-out samples carved out are at least this many, from twice as many samples on: fewer say
# too little, and without any the default strength would go unchecked. With 16 a single changed
# decision is over 6 %, so the default search keeps to models that change none of them: safe, if
# cautious. Below twice this many samples none are held out (the statistics need them).
MIN_HELD_OUT = 16
# Offsets the held-out draw's seed from the subset's, so that the two draws are independent.
_HELD_OUT_SEED = 7919


def loaded_samples(max_samples: int | None, holdout: int) -> int | None:
    """How many samples to load so that the held-out ones can come from beyond the statistics'."""
    return None if max_samples is None else max_samples + holdout


def held_out_count(loaded: int, max_samples: int | None, holdout: int) -> int:
    """How many of ``loaded`` samples to hold out: ``holdout`` when the data has that many beyond
    ``max_samples`` (the statistics then use ``max_samples``, as without a hold-out); otherwise the
    samples beyond it, or 1/4 of all, whichever is more (at most ``holdout``), but at least
    :data:`MIN_HELD_OUT` when there are twice that many samples (none below that, or when
    ``holdout`` is smaller)."""
    beyond = loaded - max_samples if max_samples is not None else 0
    count = min(holdout, max(beyond, loaded // HELD_OUT_SHARE))
    if count >= MIN_HELD_OUT:
        return count
    return MIN_HELD_OUT if holdout >= MIN_HELD_OUT and loaded >= 2 * MIN_HELD_OUT else 0


def split_held_out(data: dict[str, np.ndarray], max_samples: int | None, holdout: int, seed: int) -> CalibrationSets:
    """Split validated samples (:func:`loaded_samples` of them at most) into the statistics' and the
    held-out ones, by a seeded draw; both keep the original order."""
    n = next(iter(data.values())).shape[0]
    held_n = held_out_count(n, max_samples, holdout)
    if held_n == 0:  # nothing held out: the statistics take max_samples of them, as without a hold-out
        return CalibrationSets(_subset(data, max_samples, seed), {name: arr[:0] for name, arr in data.items()})
    order = np.random.default_rng(seed + _HELD_OUT_SEED).permutation(n)
    held, fit = np.sort(order[:held_n]), np.sort(order[held_n:])
    return CalibrationSets({name: np.ascontiguousarray(arr[fit]) for name, arr in data.items()},
                           {name: np.ascontiguousarray(arr[held]) for name, arr in data.items()})


def _subset(data: dict[str, np.ndarray], max_samples: int | None, seed: int) -> dict[str, np.ndarray]:
    """A random subset of max_samples rows, the same for every input, in the original order."""
    idx = subset_indices(next(iter(data.values())).shape[0], max_samples, seed)
    if idx is not None:
        data = {name: arr[idx] for name, arr in data.items()}
    return {name: np.ascontiguousarray(arr) for name, arr in data.items()}


def _read_file(file: Path, specs: list[InputSpec]) -> list[np.ndarray]:
    """Read one .npy/.npz file and return one array per spec, in spec order."""
    names = [s.name for s in specs]
    try:
        # Dispatch on content, not suffix; read npz members eagerly so their errors surface here.
        obj = np.load(file, allow_pickle=False)
        if isinstance(obj, np.lib.npyio.NpzFile):
            with obj:
                arrays = {k: obj[k] for k in obj.files}
        else:
            arrays = None
    except LOAD_ERRORS as exc:
        raise CalibrationError(f"cannot read '{file}' as .npy/.npz: {first_line(exc)}") from None
    if arrays is None:  # a single .npy array
        if len(names) != 1:
            raise CalibrationError(
                f"{file.name} holds one array but the model has {len(names)} inputs "
                f"({', '.join(repr(n) for n in names)}); use an .npz keyed by input name"
            )
        return [obj]
    if all(n in arrays for n in names):
        return [arrays[n] for n in names]
    if len(names) == 1 and len(arrays) == 1:
        return list(arrays.values())
    missing = ", ".join(f"'{n}'" for n in names if n not in arrays)
    have = ", ".join(f"'{k}'" for k in arrays) or "nothing"
    raise CalibrationError(f"{file.name}: missing input {missing} (has {have}); key arrays by graph input name")


def _check_array(arr: np.ndarray, spec: InputSpec, file: Path) -> np.ndarray:
    """Check dtype kind, rank, fixed dims and finiteness; return the array cast to the model dtype."""
    where = f"{file.name}: input '{spec.name}'"
    if np.issubdtype(spec.dtype, np.floating):
        # Integer images are almost always un-normalised; silently casting would calibrate on garbage.
        if not np.issubdtype(arr.dtype, np.floating):
            raise CalibrationError(
                f"{where}: expected {spec.dtype}, got {arr.dtype}; apply the model's preprocessing first"
            )
    elif _kind(arr.dtype) != _kind(spec.dtype):
        raise CalibrationError(f"{where}: expected {spec.dtype}, got {arr.dtype}; save it as {spec.dtype}")
    if not spec.shape:
        raise CalibrationError(f"{where}: the model input is a scalar, which has no batch axis to calibrate over")
    expected = "(" + ", ".join(["N"] + ["?" if d is None else str(d) for d in spec.shape[1:]]) + ")"
    if arr.ndim != len(spec.shape) or any(
        d is not None and d != a for d, a in zip(spec.shape[1:], arr.shape[1:])
    ):
        raise CalibrationError(f"{where}: expected shape {expected}, got {tuple(arr.shape)}")
    out = arr.astype(spec.dtype, copy=False)
    if np.issubdtype(out.dtype, np.floating):
        # Checked after the cast: float64 values beyond float16 range turn into Inf here.
        nan, inf = int(np.count_nonzero(np.isnan(out))), int(np.count_nonzero(np.isinf(out)))
        if nan or inf:
            raise CalibrationError(f"{where}: contains {nan} NaN and {inf} Inf value(s); data must be finite")
    return out


def _kind(dtype: np.dtype) -> str:
    """Group signed and unsigned integers together: int-to-int casts are allowed."""
    return "int" if dtype.kind in "iu" else dtype.kind
