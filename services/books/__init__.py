"""Paper books: the signals and the research basket followed step by step with the pipeline, and reconciled with the
backtest replayed from the logged predictions."""
