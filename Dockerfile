# syntax=docker/dockerfile:1
# Minerva: one image for the gRPC core (`minerva-core`) and the REST bridge (`minerva-bridge`).
#
#   docker build -t minerva:0.1.0 .                       # CPU
#   docker build -t minerva:0.1.0-cuda \
#     --build-arg BUILDER_IMAGE=nvidia/cuda:12.6.3-devel-ubuntu22.04 \
#     --build-arg RUNTIME_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu22.04 \
#     --build-arg CMAKE_ARGS=-DGGML_CUDA=on .             # GPU (run with --gpus all)
#
# No model is baked in: mount a models directory at /models. Both processes listen on
# 0.0.0.0 inside the container, which each refuses without API keys: set MINERVA_API_KEYS
# (comma-separated) or pass --api-key-file, or opt out with --allow-unauthenticated.

ARG BUILDER_IMAGE=python:3.11-bookworm
ARG RUNTIME_IMAGE=python:3.11-slim-bookworm

# ---- builder: llama-cpp-python compiled once into a wheel, then every other wheel --------------
FROM ${BUILDER_IMAGE} AS builder
# llama.cpp's CPU code for any x86-64 CPU since 2013 (AVX2, FMA), not only the build machine's
# (GGML_NATIVE would use every instruction the builder has, and the image could crash elsewhere);
# pass -DGGML_NATIVE=ON to tune an image for the machine building it.
ARG GGML_CPU_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
# More CMake flags for llama.cpp, e.g. -DGGML_CUDA=on for the CUDA variant.
ARG CMAKE_ARGS=""
# The CUDA base images have no Python 3.11; the python:3.11 ones have it in /usr/local.
RUN if ! command -v python3.11 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev && rm -rf /var/lib/apt/lists/*; \
    fi \
 && apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1
# Alone and first, so the slow compile stays cached while Minerva's code changes; the version is
# pyproject.toml's pin (a test checks they agree).
RUN CMAKE_ARGS="${GGML_CPU_ARGS} ${CMAKE_ARGS}" \
    pip wheel --no-deps --wheel-dir /wheels llama-cpp-python==0.3.36
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto proto
COPY core core
COPY rest_bridge rest_bridge
# Minerva and its dependencies as wheels; llama-cpp-python only from the wheel built above.
RUN pip wheel --wheel-dir /wheels --find-links /wheels --only-binary llama-cpp-python .

# ---- runtime: the wheels installed into a slim image, run as a non-root user ------------------
FROM ${RUNTIME_IMAGE} AS runtime
# libgomp1: llama.cpp's CPU backend uses OpenMP.
RUN if ! command -v python3.11 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv; \
    else apt-get update; fi \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels minerva
RUN groupadd --system --gid 10001 minerva \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/minerva minerva \
 && mkdir -p /models /var/cache/minerva \
 && chown minerva:minerva /var/cache/minerva
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER 10001
WORKDIR /home/minerva
VOLUME ["/models"]
# Core gRPC (health, reflection) and bridge HTTP.
EXPOSE 50051 8000
# The core by default; the bridge with `minerva-bridge --listen 0.0.0.0:8000 --core HOST:50051`.
# SafeTensors conversions go to /var/cache/minerva, so /models may be mounted read-only.
CMD ["minerva-core", "--models-dir", "/models", "--listen", "0.0.0.0:50051", \
     "--import-cache-dir", "/var/cache/minerva/gguf"]
