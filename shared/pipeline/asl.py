"""Amazon States Language for the pipeline, compiled from the one definition: what CDK deploys as the state machine."""

from __future__ import annotations

from typing import Any

from shared.pipeline.definition import PIPELINE, Step

TRANSIENT_ERROR = "TransientStepError"  # the error type a handler raises for a retryable code
SAGEMAKER_SYNC = "arn:aws:states:::sagemaker:createTrainingJob.sync"


def _task(step: Step, resources: dict[str, Any], next_state: str | None) -> dict:
    if step.runtime == "sagemaker":
        # The training job runs the same entry point as `cst train`, on the run's stored history in the lake.
        params = {**resources.get(step.name, {}),
                  "HyperParameters": {"run_id.$": "$.run_id", "until.$": "$.as_of", "step": step.name}}
        state: dict[str, Any] = {"Type": "Task", "Resource": SAGEMAKER_SYNC, "Parameters": params}
    else:
        state = {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                 "Parameters": {"FunctionName": resources.get(step.name, f"${{{step.name}}}"), "Payload.$": "$"},
                 "ResultSelector": {"output.$": "$.Payload"}}
    state["Retry"] = [{"ErrorEquals": [TRANSIENT_ERROR, "Lambda.ServiceException", "Lambda.TooManyRequestsException"],
                       "IntervalSeconds": int(step.retry.interval_s), "BackoffRate": step.retry.backoff,
                       "MaxAttempts": max(0, step.retry.max_attempts - 1)}] if step.retry.max_attempts > 1 else []
    if next_state is None:
        state["End"] = True
    else:
        state["Next"] = next_state
    return state


START = "start"  # the prologue state: turns the schedule's event into the run's RunRef (not a pipeline step)


def _failure_state(step: str, next_state: str | None, item: bool = False) -> dict:
    """A caught error as the runner records it: the step, the item, the error name as code, its cause."""
    params = {"step": step, "code.$": "$.caught.Error", "message.$": "$.caught.Cause"}
    if item:
        params["item.$"] = "$.item"
    state: dict[str, Any] = {"Type": "Pass", "Parameters": params}
    if item:
        state["End"] = True
    else:
        state.update(ResultPath="$.failed", Next=next_state)
    return state


def item_state(step: Step) -> str:
    """The task inside a Map step's item processor: "fetch batch", "predict horizon". State names are unique across
    the whole machine, nested ones included (Step Functions refuses a definition that repeats one)."""
    return f"{step.name} {step.item_noun}" if step.map_over else step.name


def state_machine(resources: dict[str, Any] | None = None) -> dict:
    """Amazon States Language for the pipeline: a prologue that makes the run's reference from the schedule's event,
    then one state per step in the definition's order, a Map over the run's horizons for Map steps, a Choice before
    conditional steps, retries on transient errors, and a Catch on every task that goes to the summary with the
    failed step named. `resources`: step name (or "start") -> Lambda ARN, or the SageMaker job parameters for
    training steps."""
    resources = resources or {}
    names = [s.name for s in PIPELINE]
    final = PIPELINE[-1].name
    states: dict[str, Any] = {START: {
        "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": resources.get(START, f"${{{START}}}"), "Payload.$": "$"},
        "ResultSelector": {"ref.$": "$.Payload"}, "OutputPath": "$.ref", "Next": names[0],
        "Retry": [{"ErrorEquals": [TRANSIENT_ERROR, "Lambda.ServiceException", "Lambda.TooManyRequestsException"],
                   "IntervalSeconds": 2, "BackoffRate": 2.0, "MaxAttempts": 2}]}}
    for i, step in enumerate(PIPELINE):
        nxt = names[i + 1] if i + 1 < len(names) else None
        catch = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.caught", "Next": f"{step.name} failed"}]
        if step.map_over:
            inner = _task(step, resources, None)
            # A finished item's result is its item only; the lake holds its output.
            inner["ResultSelector"] = {"item.$": "$.Payload.item"}
            state: dict[str, Any] = {
                "Type": "Map", "ItemsPath": f"$.{step.map_over}",
                "ItemSelector": {"run_id.$": "$.run_id", "as_of.$": "$.as_of", "source.$": "$.source",
                                 "horizons.$": "$.horizons", "item.$": "$$.Map.Item.Value"},
                # One item failing must not lose the others: the item's error is its result, and the summary reads
                # the failed items from `items.<step>`.
                **({"MaxConcurrency": step.max_concurrency} if step.max_concurrency else {}),
                "ItemProcessor": {"ProcessorConfig": {"Mode": "INLINE"}, "StartAt": item_state(step),
                                  "States": {item_state(step): {**inner, "Catch": [{"ErrorEquals": ["States.ALL"],
                                                                                    "ResultPath": "$.caught",
                                                                                    "Next": f"{item_state(step)} failed"}]},
                                             f"{item_state(step)} failed": _failure_state(step.name, None, item=True)}},
                "ResultPath": f"$.items.{step.name}", "Next": nxt}
        else:
            # Outputs a later Choice reads stay in the execution's state; the rest live in the lake only.
            kept = any(s.when and s.when.partition(".")[0] == step.name for s in PIPELINE)
            state = {**_task(step, resources, nxt), "ResultPath": f"$.run.{step.name}" if kept else None}
        if step.name != final:
            state["Catch"] = catch
            states[f"{step.name} failed"] = _failure_state(step.name, final)
        if step.when:
            source, _, attr = step.when.partition(".")
            states[f"{step.name}?"] = {
                "Type": "Choice",
                "Choices": [{"Variable": f"$.run.{source}.output.{attr}[0]", "IsPresent": True, "Next": step.name}],
                "Default": nxt}
        states[step.name] = state
    # Conditional steps are entered through their Choice.
    for i, step in enumerate(PIPELINE):
        if step.when and i > 0:
            prev = states[names[i - 1]]
            prev["Next"] = f"{step.name}?"
    return {"Comment": "cst pipeline, generated from shared.pipeline.PIPELINE", "StartAt": START, "States": states}


def state_order(definition: dict) -> list[str]:
    """The step states in the order an execution without failures visits them (Choices followed to their step)."""
    states, order, name = definition["States"], [], definition["StartAt"]
    while name is not None:
        state = states[name]
        if state["Type"] == "Choice":
            name = state["Choices"][0]["Next"]
            continue
        if name != START:
            order.append(name)
        name = None if state.get("End") else state.get("Next")
    return order

