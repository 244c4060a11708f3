"""The pipeline: its steps as data (`definition`), what the steps exchange (`contracts`), the state machine compiled
from the definition (`asl`) and what a step's logic is given (`context`).

Nothing here imports `services/`: the orchestrator (`services/orchestrator/`) binds each step's name to its function
and runs it locally, in Lambda or in SageMaker; the state machine is generated from the same definition.
"""
