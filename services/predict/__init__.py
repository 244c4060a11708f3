"""Prediction (ONNX inference, confidence filter, consensus, logging): built with the main-job issue."""
