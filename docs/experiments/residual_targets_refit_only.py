"""Rejected experiment (docs/method.md, "Where ResNet-18 loses its accuracy"): residual targets
for the refit only. Needs docs/experiments/residual-targets.patch applied; run from the repository
root: python docs/experiments/residual_targets_refit_only.py

The unit's selection at its first consumer uses the plain targets; the weights installed there
(and every later refit) use the residual targets. Monkeypatches the engine, as a study may.
"""
import sys, runpy
sys.argv = ["resnet_study.py", "all"]
import onnxprune.engine as engine
P = engine.Pruner
orig_decide, orig_offset, orig_stats, orig_install = P._decide, P._target_offset, P._statistics, P._install
def _decide(self, unit, first):
    self._in_decide = True
    try:
        return orig_decide(self, unit, first)
    finally:
        self._in_decide = False
def _statistics(self, layer, cof, n, out_rows=None):
    if getattr(self, "_in_decide", False):
        self._refit_problem = orig_stats(self, layer, cof, n, out_rows)  # with offset
        self._no_offset = True
        try:
            return orig_stats(self, layer, cof, n, out_rows)
        finally:
            self._no_offset = False
    return orig_stats(self, layer, cof, n, out_rows)
def _target_offset(self, layer):
    return None if getattr(self, "_no_offset", False) else orig_offset(self, layer)
def _install(self, layer, problem, keep):
    if getattr(self, "_in_decide", False):
        problem = self._refit_problem
    return orig_install(self, layer, problem, keep)
P._decide, P._statistics, P._target_offset, P._install = _decide, _statistics, _target_offset, _install
runpy.run_path("tools/resnet_study.py", run_name="__main__")
