"""Prediction: ONNX inference with SHAP, the confidence filter and consensus, logging, outcomes, performance, drift."""
