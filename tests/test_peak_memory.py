"""The reported peak memory is the pruning process's own, not inherited from the process that started it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from onnxprune.measure.memory import peak_memory_mb


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the inheritance (and VmHWM) is Linux's")
def test_child_does_not_report_the_parents_peak():
    held = np.ones(400 * 2**20 // 8)  # 400 MB resident in this process
    code = "from onnxprune.measure.memory import peak_memory_mb; print(peak_memory_mb())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert peak_memory_mb() >= 400
    assert child < 300, f"the child reported {child:.0f} MB: the parent's {held.nbytes / 2**20:.0f} MB leaked in"
