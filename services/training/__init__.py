"""Training: labels, purged walk-forward CV, tuned base learners, stacking, calibration, ONNX export, the registry."""
