"""Features: the quality gate, point-in-time fusion of every layer, the one feature registry and the Parquet store."""
