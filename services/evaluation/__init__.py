"""Evaluation: `cst evaluate` and `cst backtest`, config in and report out (out-of-sample scores, backtest, plots)."""
