"""Per-sample activations of the calibration set: in memory while they are small, on disk beyond.

The segmented execution (calib/runner.py) keeps, for every calibration sample, the tensors at
the current layer boundary of both networks. In memory that grows linearly with the samples
(VGG-16 at 1,024 images: 1.5 GB peak), so past a budget a tensor goes to a raw file in a
temporary directory instead, written and read batch by batch with plain reads and writes: the
file's pages then sit in the kernel's page cache, which is not this process's resident memory
and which the kernel drops under pressure, whereas np.memmap's pages count in the resident set
as soon as they are touched. Consumers see one interface whatever the place: ``read(begin,
end)``, ``batches(size)``, ``drop_channels(mask)``; the bytes, and so the results, are the same.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np

MB = 1 << 20


class StoredTensor:
    """One tensor of shape (n, *row_shape) for all n calibration samples."""

    def __init__(self, store: ActivationStore, n: int, row_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.store, self.n, self.row_shape, self.dtype = store, n, tuple(row_shape), np.dtype(dtype)

    @property
    def nbytes(self) -> int:
        return self.n * math.prod(self.row_shape) * self.dtype.itemsize

    def read(self, begin: int, end: int) -> np.ndarray:
        raise NotImplementedError

    def write(self, begin: int, values: np.ndarray) -> None:
        raise NotImplementedError

    def release(self) -> None:
        """Give the memory or the file back; the tensor is unusable afterwards."""

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for begin in range(0, self.n, batch_size):
            yield self.read(begin, min(begin + batch_size, self.n))

    def drop_channels(self, mask: np.ndarray) -> StoredTensor:
        """The tensor without the channels (axis 1) where mask is False; this one is released."""
        kept = self.store.create(self.n, (int(np.count_nonzero(mask)),) + self.row_shape[1:], self.dtype)
        for begin in range(0, self.n, self.store.batch_size):
            kept.write(begin, self.read(begin, min(begin + self.store.batch_size, self.n))[:, mask])
        self.release()
        return kept

    def _check(self, begin: int, values: np.ndarray) -> None:
        if values.shape[1:] != self.row_shape or begin + len(values) > self.n:
            raise ValueError(f"rows {begin}..{begin + len(values)} of shape {values.shape[1:]} do not fit a "
                             f"tensor of {self.n} x {self.row_shape}")


class MemoryTensor(StoredTensor):
    """An array; ``owned`` once the store counts it against its budget (not for wrapped inputs)."""

    def __init__(self, store: ActivationStore, array: np.ndarray) -> None:
        super().__init__(store, len(array), array.shape[1:], array.dtype)
        self.array, self.owned = array, False

    def read(self, begin: int, end: int) -> np.ndarray:
        return self.array[begin:end]

    def write(self, begin: int, values: np.ndarray) -> None:
        self._check(begin, values)
        self.array[begin:begin + len(values)] = values

    def release(self) -> None:
        if self.owned:  # a wrapped input stays: both networks' runners hold it
            self.store.in_memory -= self.array.nbytes
            self.array, self.owned = None, False

    def drop_channels(self, mask: np.ndarray) -> StoredTensor:
        kept = MemoryTensor(self.store, np.ascontiguousarray(self.array[:, mask]))
        self.release()
        self.store.adopt(kept)
        return kept


class FileTensor(StoredTensor):
    """Rows in one raw file, C order: row i starts at byte i * row_bytes."""

    def __init__(self, store: ActivationStore, path: Path, n: int, row_shape: tuple[int, ...], dtype: np.dtype) -> None:
        super().__init__(store, n, row_shape, dtype)
        self.path = path
        self.row_bytes = math.prod(self.row_shape) * self.dtype.itemsize
        self.file = open(path, "w+b", buffering=0)  # noqa: SIM115 (closed in release, or by the store)

    def read(self, begin: int, end: int) -> np.ndarray:
        start = time.perf_counter()
        out = np.empty((end - begin,) + self.row_shape, dtype=self.dtype)
        if not out.nbytes:
            return out
        view = memoryview(out).cast("B")
        self.file.seek(begin * self.row_bytes)
        done = 0
        while done < len(view):  # a raw read may return less than asked
            got = self.file.readinto(view[done:])
            if not got:
                raise OSError(f"{self.path}: activation file ends early")
            done += got
        self.store.count(read=len(view), seconds=time.perf_counter() - start)
        return out

    def write(self, begin: int, values: np.ndarray) -> None:
        self._check(begin, values)
        if not values.nbytes:
            return
        start = time.perf_counter()
        view = memoryview(np.ascontiguousarray(values, dtype=self.dtype)).cast("B")
        self.file.seek(begin * self.row_bytes)
        done = 0
        while done < len(view):
            done += self.file.write(view[done:])
        self.store.count(written=len(view), seconds=time.perf_counter() - start)

    def release(self) -> None:
        if not self.file.closed:
            self.file.close()
            self.path.unlink(missing_ok=True)
            self.store.files.discard(self)


class ActivationStore:
    """Creates the tensors, keeps at most ``memory_limit`` bytes of them in memory, cleans up.

    Use as a context manager (or call close()): the temporary directory is removed on success,
    on error and on Ctrl-C; a finaliser removes it at interpreter exit if close() was never reached.
    """

    def __init__(self, *, memory_limit: float = 256 * MB, directory: str | None = None, batch_size: int = 128) -> None:
        self.memory_limit, self.parent, self.batch_size = memory_limit, directory, batch_size
        self.in_memory = 0  # bytes of the tensors this store allocated in memory, live now
        self.peak_in_memory = 0
        self.files: set[FileTensor] = set()
        self.directory: Path | None = None
        self._cleanup: weakref.finalize | None = None
        self.bytes_written = self.bytes_read = 0
        self.io_seconds = 0.0
        self._next = 0

    def wrap(self, array: np.ndarray) -> StoredTensor:
        """An array that already exists (the calibration inputs): not copied, not counted."""
        return MemoryTensor(self, array)

    def create(self, n: int, row_shape: tuple[int, ...], dtype: np.dtype) -> StoredTensor:
        """An empty tensor, in memory if it fits the budget next to the live ones, else on disk."""
        nbytes = n * math.prod(row_shape) * np.dtype(dtype).itemsize
        if self.in_memory + nbytes <= self.memory_limit:
            tensor = MemoryTensor(self, np.empty((n,) + tuple(row_shape), dtype=dtype))
            self.adopt(tensor)
            return tensor
        tensor = FileTensor(self, self._directory() / f"{self._next}.bin", n, tuple(row_shape), dtype)
        self._next += 1
        self.files.add(tensor)
        return tensor

    def adopt(self, tensor: MemoryTensor) -> None:
        tensor.owned = True
        self.in_memory += tensor.array.nbytes
        self.peak_in_memory = max(self.peak_in_memory, self.in_memory)

    def count(self, *, read: int = 0, written: int = 0, seconds: float = 0.0) -> None:
        self.bytes_read += read
        self.bytes_written += written
        self.io_seconds += seconds

    def summary(self) -> dict[str, float]:
        """What the store did, for the report: MB kept in memory at most, MB through the disk, I/O time."""
        limit = self.memory_limit / MB if math.isfinite(self.memory_limit) else None
        return {"memory_limit_mb": limit, "peak_in_memory_mb": round(self.peak_in_memory / MB, 1),
                "written_mb": round(self.bytes_written / MB, 1), "read_mb": round(self.bytes_read / MB, 1),
                "io_seconds": round(self.io_seconds, 3)}

    def close(self) -> None:
        for tensor in list(self.files):
            tensor.release()
        if self._cleanup is not None:
            self._cleanup()  # removes the directory, once

    def __enter__(self) -> ActivationStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _directory(self) -> Path:
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="onnxprune-", dir=self.parent))
            self._cleanup = weakref.finalize(self, shutil.rmtree, self.directory, ignore_errors=True)
        return self.directory


def same_values(a: StoredTensor, b: StoredTensor) -> bool:
    """Whether two tensors hold the same values, compared batch by batch."""
    if a is b:
        return True
    if (a.n, a.row_shape) != (b.n, b.row_shape):
        return False
    size = a.store.batch_size
    return all(np.array_equal(x, y) for x, y in zip(a.batches(size), b.batches(size)))
