# The serving image: every Lambda step (and the run's start) with the project's core dependencies only
# (numpy, onnxruntime, pyarrow, TA-Lib, pydantic, boto3, ccxt, Powertools): no scikit-learn, torch, shap or pandas.
# The function's CMD names its handler (services.handlers.<step>).
FROM public.ecr.aws/lambda/python:3.12
COPY pyproject.toml README.md ${LAMBDA_TASK_ROOT}/
COPY shared ${LAMBDA_TASK_ROOT}/shared
COPY services ${LAMBDA_TASK_ROOT}/services
RUN pip install --no-cache-dir "${LAMBDA_TASK_ROOT}"
