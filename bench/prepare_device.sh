#!/usr/bin/env bash
# Build .device/, the folder bench/device_learner.sh needs on the GPU machine (run HERE, at the
# repo root, with network access).  The device tool carries it when a run names it in `carry`:
#   carry: [".device"]   command: bash bench/device_learner.sh
# Contents:
#   .device/wheels/  pyzmq, redis-py and prometheus-client for CPython 3.12 x86-64 (the GPU image
#                    has torch, numpy and msgpack; the learner/replay import chain needs only these
#                    three more: zmq, redis, prometheus_client)
#   .device/redis/   Debian's redis-tools (+ liblzf1 libjemalloc2 libatomic1) unpacked with dpkg -x;
#                    its usr/bin/redis-check-rdb is the multi-call redis binary, run as redis-server
#   .device/probes/  copies of ../shared/probes/{learner_limit,feed_limits}.py (../shared does not travel)
# .device/ is ignored through .git/info/exclude (never committed).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
PY=${PYTHON:-.venv/bin/python}
rm -rf .device && mkdir -p .device/wheels .device/redis .device/probes .device/debs

"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  --platform any -d .device/wheels \
  pyzmq==27.3.0 redis==8.1.0 prometheus-client==0.26.0
for w in .device/wheels/*.whl; do
  echo "$(basename "$w"): $(unzip -p "$w" '*/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' | tr '\n' ' ')"
done

(cd .device/debs && apt-get download redis-tools liblzf1 libjemalloc2 libatomic1)
for f in .device/debs/*.deb; do dpkg -x "$f" .device/redis; done
rm -rf .device/debs
# keep only what redis-server needs: the binary and its libraries
find .device/redis -mindepth 1 -maxdepth 2 ! -path '.device/redis/usr' ! -path '.device/redis/usr/bin' \
  ! -path '.device/redis/usr/lib' -exec rm -rf {} +
find .device/redis/usr/bin -type f ! -name redis-check-rdb -delete
find .device/redis/usr/bin -type l -delete
# links become plain copies (small), so nothing depends on how links travel
for l in $(find .device/redis -type l); do cp --remove-destination "$(readlink -f "$l")" "$l"; done

# fallback: the libraries redis links to beyond glibc, in case the GPU image lacks one; the device
# script adds this folder to redis' LD_LIBRARY_PATH only when ldd reports a library not found
mkdir -p .device/debs .device/redis-fallback
(cd .device/debs && apt-get download libsystemd0 libssl3 libcap2 libgcrypt20 liblzma5 libzstd1 liblz4-1 libgpg-error0)
for f in .device/debs/*.deb; do dpkg -x "$f" .device/debs/x; done
find .device/debs/x -name '*.so*' \( -type f -o -type l \) -exec cp -L {} .device/redis-fallback/ \;
rm -rf .device/debs

cp ../shared/probes/learner_limit.py ../shared/probes/feed_limits.py .device/probes/

# smoke test: the carried redis binary starts under the name redis-server
LD_LIBRARY_PATH="$PWD/.device/redis/usr/lib/x86_64-linux-gnu" \
  bash -c 'exec -a redis-server .device/redis/usr/bin/redis-check-rdb --version'
du -sh .device
find .device -type f | sort
