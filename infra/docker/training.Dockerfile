# The training image for SageMaker: the same code with the training extra; SageMaker runs `train`, which runs
# services.orchestrator.sagemaker (the pipeline step, or what `cst train` does) with the job's hyperparameters.
FROM python:3.12-slim
WORKDIR /opt/program
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu ".[training]" \
    && printf '#!/bin/sh\nexec python -m services.orchestrator.sagemaker\n' > /usr/local/bin/train && chmod +x /usr/local/bin/train
ENV SM_INPUT_CONFIG_DIR=/opt/ml/input/config
