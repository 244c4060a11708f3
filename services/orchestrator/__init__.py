"""The orchestrator: runs the pipeline's steps (locally, in Lambda, in SageMaker) and offers the use cases the CLI and
the API share. It sits on top: the services below never import it (tests/test_import_graph.py)."""
