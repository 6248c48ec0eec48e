# sd-worker for Apple silicon Macs, as a container: linux/arm64, running on the CPU.
#
# Docker on macOS runs a Linux VM that cannot reach Metal, so no container can use the MPS GPU. This image is
# the arm64 CPU build for Macs. For the GPU, run natively instead (no Docker):
#   python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e .
#   sd-worker --device mps --sd-version v1-5
#
#   docker build --platform linux/arm64 -f Dockerfile.mps -t sd-worker:mac .
#   docker run -p 8081:8081 -v sd-models:/models sd-worker:mac
# The arm64 platform is this image's whole point (Apple silicon), hence the pinned --platform.
# hadolint ignore=DL3029
FROM --platform=linux/arm64 python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/models/huggingface \
    SD_WORKER_HOST=0.0.0.0 \
    SD_WORKER_PORT=8081

RUN useradd --create-home --uid 10001 worker \
    && mkdir -p /models \
    && chown worker:worker /models

WORKDIR /app
# PyPI's Linux arm64 torch wheel is a CPU build.
RUN pip install torch==2.13.0
COPY pyproject.toml README.md ./
COPY worker ./worker
RUN pip install .

USER 10001
VOLUME ["/models"]
EXPOSE 8081
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/health', timeout=4)"]
ENTRYPOINT ["sd-worker"]
CMD ["--device", "cpu"]
