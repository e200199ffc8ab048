"""The process's peak resident memory, as the report gives it."""

from __future__ import annotations


def peak_memory_mb() -> float | None:
    """Peak resident set size of this process so far, in MB (None where the OS does not say)."""
    try:  # Linux: the high-water mark of this process's own memory. ru_maxrss would not do: a
        # process started by fork/vfork + exec inherits its parent's ru_maxrss, so a CLI run from a
        # large Python parent (a benchmark holding a test set) would report the parent's peak.
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
