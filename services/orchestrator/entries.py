"""Each pipeline step's function, by the step's name in the one definition (`shared.pipeline.definition`): the
table a reader follows from a step's name into its code, and the one the runner, the Lambda handlers and the
SageMaker entry point call.

Each entry imports its service when the step runs, so a Lambda loads only its own step's modules (a cold start
pays for one service, not all of them) and the serving image never loads the training libraries.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.pipeline.context import StepContext
from shared.pipeline.contracts import RunRef, StepOutput

StepFunction = Callable[[StepContext, RunRef], StepOutput]


def fetch(ctx: StepContext, ref: RunRef) -> StepOutput:
    from services.ingest.steps import fetch

    return fetch(ctx, ref)


def ingest(ctx: StepContext, ref: RunRef) -> StepOutput:
    from services.ingest.steps import ingest

    return ingest(ctx, ref)


def validate(ctx: StepContext, ref: RunRef) -> StepOutput:
    from services.features.steps import validate

    return validate(ctx, ref)


def features(ctx: StepContext, ref: RunRef) -> StepOutput:
    from services.features.steps import features

    return features(ctx, ref)


def train(ctx: StepContext, ref: RunRef) -> StepOutput:
    from services.training.steps import train_missing

    return train_missing(ctx, ref)


def predict(ctx: StepContext, ref: RunRef) -> StepOutput:
    from services.predict.steps import predict

    return predict(ctx, ref)


def risk(ctx: StepContext, ref: RunRef) -> StepOutput:
    from services.risk.steps import risk

    return risk(ctx, ref)


def books(ctx: StepContext, ref: RunRef) -> StepOutput:
    from services.books.steps import books

    return books(ctx, ref)


def outcomes(ctx: StepContext, ref: RunRef) -> StepOutput:
    from services.predict.steps import outcomes

    return outcomes(ctx, ref)


def performance(ctx: StepContext, ref: RunRef) -> StepOutput:
    from services.predict.steps import performance

    return performance(ctx, ref)


def drift(ctx: StepContext, ref: RunRef) -> StepOutput:
    from services.predict.steps import drift

    return drift(ctx, ref)


def retrain(ctx: StepContext, ref: RunRef) -> StepOutput:
    from services.training.steps import retrain

    return retrain(ctx, ref)


def summary(ctx: StepContext, ref: RunRef) -> StepOutput:
    from services.orchestrator.summary import summary

    return summary(ctx, ref)


ENTRIES: dict[str, StepFunction] = {
    "fetch": fetch,
    "ingest": ingest,
    "validate": validate,
    "features": features,
    "train": train,
    "predict": predict,
    "risk": risk,
    "books": books,
    "outcomes": outcomes,
    "performance": performance,
    "drift": drift,
    "retrain": retrain,
    "summary": summary,
}
