"""The dashboard and API: FastAPI over the lake, served by `cst serve` locally and through Mangum in Lambda."""
