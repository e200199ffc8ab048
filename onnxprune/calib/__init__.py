"""Calibration: loading and validating the sample inputs that drive the pruning statistics."""
