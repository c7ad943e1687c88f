# Stability doctor (diagnosis from Prometheus, cure through the learner's control endpoint): no torch, no MAME.
#   docker compose build doctor      (context: the repository root, see docker-compose.yml)
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# The pinned runtime packages of requirements.txt; torch and the test/dev tools are left out.
COPY requirements.txt /tmp/requirements.txt
RUN grep -vE '^(torch|pytest|hypothesis|honcho)==' /tmp/requirements.txt > /tmp/runtime.txt \
 && pip install -r /tmp/runtime.txt \
 && useradd --system --uid 10001 --create-home tempest

COPY tempest_common/ tempest_common/
COPY services/ services/

USER tempest
# HTTP 9105: /metrics and /diagnosis.md
EXPOSE 9105
CMD ["python", "-m", "services.doctor.main"]
