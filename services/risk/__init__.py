"""Risk: orders from consensus signals, sizing, the guards and the live gate, one entry rule shared with the backtest.

Imports only `shared` (and numpy): it runs inside the serving task, without training or evaluation.
"""
