# Learner service (PyTorch DQN).  torch comes from a build argument so the same file builds the
# CPU image (default) or a CUDA one; the CUDA wheels bundle the CUDA runtime, so the slim base
# only needs the host's NVIDIA driver (NVIDIA Container Toolkit) at run time.
#
#   CPU (default):  docker compose build learner
#   CUDA:           TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 docker compose build learner
#                   (or: docker build -f docker/learner.Dockerfile \
#                          --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .)
# Pick the cuXYZ index that pytorch.org lists for torch 2.13.0 and your driver; TORCH_SPEC changes
# the requirement itself (e.g. a local version such as torch==2.13.0+cu128).
FROM python:3.11-slim-bookworm

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_SPEC=torch==2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

RUN pip install --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"
# The other pinned runtime packages of requirements.txt (torch is installed above).
COPY requirements.txt /tmp/requirements.txt
RUN grep -vE '^(torch|pytest|hypothesis|honcho)==' /tmp/requirements.txt > /tmp/runtime.txt \
 && pip install -r /tmp/runtime.txt \
 && useradd --system --uid 10001 --create-home tempest \
 && mkdir -p /data/checkpoints && chown -R tempest /data

COPY tempest_common/ tempest_common/
COPY services/ services/

USER tempest
# Checkpoints go to a volume (docker-compose.yml mounts learner-checkpoints here).
ENV CHECKPOINT_DIR=/data/checkpoints
VOLUME ["/data/checkpoints"]
# PULL 5557 (episode summaries), PUB 5558 (weights + schedule), ROUTER 5559 (live settings), /metrics 9104
EXPOSE 5557 5558 5559 9104
CMD ["python", "-m", "services.learner.main"]
