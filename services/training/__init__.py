"""Training (labels, walk-forward CV, ensembles, calibration, ONNX export): built with the training issue."""
