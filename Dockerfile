# caption-verifier: one image for the API, the GPU/CPU verify workers and the webhook workers,
# with the BLIP-ITM weights baked in (workers never reach the Hugging Face hub at run time).
#
#   docker build -t caption-verifier .                                   # CUDA torch, real model (needs the hub)
#   docker build -t caption-verifier \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .  # CPU-only torch (much smaller)
#   docker build -t caption-verifier --build-arg MODEL=random:base .      # offline: RANDOM weights, scores meaningless
#
# See docs/deployment.md.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a virtual environment with torch, the project and the saved model -----------------
FROM ${PYTHON_IMAGE} AS build

# The torch build: the CUDA wheel by default (fits GPUs with a recent driver); a CPU build with
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu. TORCH_SPEC must satisfy pyproject's range.
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# A hub id (needs network access to huggingface.co while building), or random:base /
# random:tiny for an offline build with RANDOM weights (the pipeline runs, the scores are noise).
ARG MODEL=Salesforce/blip-itm-base-coco

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, from its own index, so that `pip install .` keeps it instead of pulling another.
RUN pip install --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY core ./core
COPY api ./api
COPY worker ./worker
COPY verifier ./verifier
RUN pip install . && python -c "import torch, transformers, celery; print('torch', torch.__version__)"

# Bake the model: the weights, tokenizer and image processor config, read by VERIFIER_MODEL below.
ENV HF_HOME=/tmp/hf-build
RUN case "${MODEL}" in random:*) echo "WARNING: baking ${MODEL}: RANDOM weights, scores are meaningless" >&2;; esac; \
    verifier model save "${MODEL}" /models/blip-itm \
    && rm -rf /tmp/hf-build

# --- runtime ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG MODEL=Salesforce/blip-itm-base-coco
LABEL org.opencontainers.image.title="caption-verifier" \
      org.opencontainers.image.description="Flask intake API, Celery BLIP-ITM workers and webhook workers" \
      io.caption-verifier.model="${MODEL}"

RUN groupadd --system --gid 10001 verifier \
    && useradd --system --uid 10001 --gid verifier --create-home --home-dir /home/verifier verifier

COPY --from=build /opt/venv /opt/venv
COPY --from=build /models /models

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/home/verifier/.cache/huggingface \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    VERIFIER_MODEL=/models/blip-itm

USER verifier
WORKDIR /home/verifier
EXPOSE 8000

# The command picks the role: `verifier api ...`, `verifier worker --queues verify|webhooks`.
CMD ["verifier", "api", "--host", "0.0.0.0", "--port", "8000"]
