"""cst's services, one folder per concern: ingest, features, training, predict, risk, evaluation (and the `cst` CLI)."""
