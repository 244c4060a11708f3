"""cst services: ingest, features (quality gate), predict, training."""
