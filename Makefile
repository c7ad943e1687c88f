# Tempest DQN training system: `make setup`, `make up`, `make test` (see README.md).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
EMULATORS ?= 1
DEBIAN_PACKAGES := mame redis-server prometheus
export TEMPEST_ROMPATH ?= $(abspath ../shared/roms)

.PHONY: setup debian-packages up status diagnosis test test-unit test-game test-compose bench bench-learning clean

setup: debian-packages $(VENV)/.installed

# Debian packages the services and tests need; installed only when missing (needs root or sudo).
debian-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null \
	  || { echo "setup: could not install$$missing (run as root or install them yourself)"; exit 1; }; \
	fi

$(VENV)/.installed: requirements.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@touch $@

# The whole pipeline on this machine without Docker (tools/local_stack.py): redis-server,
# prometheus, replay, expert, learner and EMULATORS=N workers.  Ctrl-C stops everything, MAME included.
up: setup
	$(PY) -m tools.local_stack --emulators $(EMULATORS)

# A live terminal view of the key figures (like the incident's stats rows), from Prometheus.
status: setup
	$(PY) -m tools.status

# The stability doctor's latest diagnosis (services/doctor: symptoms, ranked causes, the cure's commands).
DOCTOR_URL ?= http://127.0.0.1:9105
diagnosis:
	@curl -sf $(DOCTOR_URL)/diagnosis.md || { test -f run/doctor/diagnosis.md && cat run/doctor/diagnosis.md; } \
	  || { echo "no diagnosis: is the doctor running (make up)?"; exit 1; }

test: setup
	$(PY) -m pytest -q

test-unit: setup
	$(PY) -m pytest -q tests/unit

test-game: setup
	$(PY) -m pytest -q tests/game

# The containers on a running Docker engine (tests/compose: build, up, --scale emulator=2, stop/up,
# down -v; then a single-node Swarm).  Not part of `make test`.  Where no image registry is
# reachable, ../shared/docker-here/start-engine.sh starts an engine and its compose.here.yml is
# added here (TEMPEST_COMPOSE_FILES: more compose files, ':'-separated).
DOCKER_HERE := $(abspath ../shared/docker-here/compose.here.yml)
TEMPEST_COMPOSE_FILES ?= $(if $(wildcard $(DOCKER_HERE)),$(DOCKER_HERE),)
test-compose: setup
	TEMPEST_COMPOSE_FILES="$(TEMPEST_COMPOSE_FILES)" $(PY) -m pytest -q -s -m compose tests/compose

# Every benchmark, one after another (each ends with its JSON line; ~15 minutes on 2 cores).
bench: setup
	for b in emulator expert replay learner; do $(PY) bench/$$b.py || exit 1; done

# Does the network learn?  Trains the whole pipeline and evaluates it (~50 minutes on 2 cores).
bench-learning: setup
	$(PY) bench/learning.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
