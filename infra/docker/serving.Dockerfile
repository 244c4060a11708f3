# The serving image: every Lambda step (and the run's start) with the project's core dependencies only
# (numpy, onnxruntime, pyarrow, TA-Lib, pydantic, boto3, ccxt, Powertools): no scikit-learn, torch, shap or pandas.
# The API function builds it with EXTRAS="[api]" (FastAPI, Mangum, PyJWT, Jinja2) and the dashboard's Chart.js.
# The function's CMD names its handler (services.orchestrator.handlers.<step>, services.api.lambda_handler.handler).
FROM public.ecr.aws/docker/library/node:20-slim AS charts
COPY services/api/package.json services/api/package-lock.json /charts/
RUN npm ci --prefix /charts --ignore-scripts --no-audit --no-fund --omit=dev

FROM public.ecr.aws/lambda/python:3.12
ARG EXTRAS=""
COPY pyproject.toml README.md ${LAMBDA_TASK_ROOT}/
COPY shared ${LAMBDA_TASK_ROOT}/shared
COPY services ${LAMBDA_TASK_ROOT}/services
COPY --from=charts /charts/node_modules ${LAMBDA_TASK_ROOT}/services/api/node_modules
RUN pip install --no-cache-dir "${LAMBDA_TASK_ROOT}${EXTRAS}"
