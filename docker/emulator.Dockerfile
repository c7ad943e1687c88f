# Emulator worker: Debian's MAME plus the worker, which runs the network itself (CPU torch).
# The ROM is never part of the image: mount the folder holding tempest1/ and point
# TEMPEST_ROMPATH at the mount (docker-compose.yml mounts ${TEMPEST_ROMPATH} read-only at /roms).
#
# bookworm: the Debian release the Lua bridge is developed and tested with (MAME 0.251).
FROM python:3.11-slim-bookworm

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_SPEC=torch==2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mame \
 && rm -rf /var/lib/apt/lists/* \
 && test -x /usr/games/mame

RUN pip install --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"
# The other pinned runtime packages of requirements.txt (torch is installed above).
COPY requirements.txt /tmp/requirements.txt
RUN grep -vE '^(torch|pytest|hypothesis|honcho)==' /tmp/requirements.txt > /tmp/runtime.txt \
 && pip install -r /tmp/runtime.txt \
 && useradd --system --uid 10001 --create-home tempest

COPY tempest_common/ tempest_common/
COPY services/ services/

USER tempest
ENV MAME_BINARY=/usr/games/mame TEMPEST_ROMPATH=/roms
# /metrics 9101 (the worker only connects out: replay 5555, expert 5556, learner 5557/5558)
EXPOSE 9101
# The worker stops MAME itself on SIGTERM (headless MAME ignores SIGTERM): give it time
# (docker-compose.yml: stop_grace_period) and run it under an init (compose: init: true).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "services.emulator.main"]
