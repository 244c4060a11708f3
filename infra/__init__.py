"""The CDK app that deploys cst: the lake, the step functions, the state machine, schedules, users and the API."""
