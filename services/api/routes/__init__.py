"""The JSON API, one router per resource: who am I, signals, forecasts (predictions and a coin's), performance, runs,
models, data quality, feedback, alerts, and the operator's actions."""

from services.api.routes import (
    account,
    actions,
    alerts,
    books,
    feedback,
    forecasts,
    models,
    performance,
    quality,
    runs,
    signals,
)

ROUTERS = [r.router for r in (account, signals, forecasts, performance, runs, models, quality, feedback, alerts,
                              books, actions)]
