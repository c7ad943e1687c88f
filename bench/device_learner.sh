#!/usr/bin/env bash
# The learner benchmark on the lent GPU machine.  Run through the device tool at the repo root:
#   carry: [".device"]     command: bash bench/device_learner.sh      (timeout_s ~540)
# .device/ is made HERE by bench/prepare_device.sh (wheels for pyzmq, redis-py, prometheus-client;
# Debian's redis binary + libraries; copies of ../shared/probes, which do not travel).
# Writes to $OUT: env.txt, probes.txt, bench_learner.txt and the bench's redis/replay/learner logs.
# Every step runs even if an earlier one failed; the last lines summarise the exit codes.
set -uo pipefail
export PYTHONUNBUFFERED=1
ROOT=$PWD
D=$ROOT/.device
OUT=${OUT:-/tmp/device_out}
PY=${PY:-python3}
mkdir -p "$OUT"
[ -d "$D/wheels" ] || { echo "no .device/: run bench/prepare_device.sh here and carry .device" >&2; exit 2; }

# Python packages the services import that the image lacks (torch, numpy, msgpack are there)
if ! "$PY" -c 'import zmq, redis, prometheus_client' 2>/dev/null || [ -n "${FORCE_WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$D"/wheels/*.whl || exit 3
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

# Redis: Debian's multi-call binary, started by the bench under the name redis-server
export REDIS_SERVER=$D/redis/usr/bin/redis-check-rdb
export REDIS_LD_LIBRARY_PATH=$D/redis/usr/lib/x86_64-linux-gnu
chmod +x "$REDIS_SERVER"
if LD_LIBRARY_PATH=$REDIS_LD_LIBRARY_PATH ldd "$REDIS_SERVER" | grep -q 'not found'; then
  echo "redis: libraries missing from the image, adding .device/redis-fallback:" >&2
  LD_LIBRARY_PATH=$REDIS_LD_LIBRARY_PATH ldd "$REDIS_SERVER" | grep 'not found' >&2
  export REDIS_LD_LIBRARY_PATH=$REDIS_LD_LIBRARY_PATH:$D/redis-fallback
fi

{
  date -u; uname -a; nproc; free -g | head -2
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1
  "$PY" -c 'import sys, torch, numpy, zmq, redis, prometheus_client, msgpack
print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "",
      "numpy", numpy.__version__, "pyzmq", zmq.__version__, "redis", redis.__version__,
      "msgpack", msgpack.version, "prometheus_client ok")'
  LD_LIBRARY_PATH=$REDIS_LD_LIBRARY_PATH bash -c 'exec -a redis-server "$REDIS_SERVER" --version'
} 2>&1 | tee "$OUT/env.txt"

run() {  # run LABEL FILE TIMEOUT CMD...: tee into $OUT/FILE (appending), remember the exit code
  local label=$1 file=$2 t=$3; shift 3
  echo "=== $label: $* (timeout $t s)" | tee -a "$OUT/$file"
  timeout "$t" "$@" 2>&1 | tee -a "$OUT/$file"
  local rc=${PIPESTATUS[0]}
  RCS="$RCS $label=$rc"
  echo "=== $label: rc $rc" | tee -a "$OUT/$file"
}
RCS=""
LL_BATCH=${LL_BATCH:-16384}   # smaller only for a dry run here
FEED_S=${FEED_S:-5}           # 0 skips feed_limits (dry run)
# the bare ceiling as the shared probe measures it: the seed's shape (171 -> 512x7), fp32 and bf16,
# and the probe's closest shape to the learner's network (200 -> 512x3, 44 actions)
run limit_fp32 probes.txt 120 "$PY" "$D/probes/learner_limit.py" --batch "$LL_BATCH"
run limit_bf16 probes.txt 120 "$PY" "$D/probes/learner_limit.py" --batch "$LL_BATCH" --amp
run limit_bf16_200x512x3 probes.txt 120 "$PY" "$D/probes/learner_limit.py" --batch "$LL_BATCH" --amp \
  --state 200 --layers 3 --actions 44
# can batches reach the GPU fast enough over ZeroMQ (5 s per transport x dtype)
[ "$FEED_S" != 0 ] && run feed_limits probes.txt 150 "$PY" "$D/probes/feed_limits.py" "$FEED_S"
# the benchmark itself (its logs land in $OUT too)
export BENCH_LOG_DIR=$OUT
run bench_learner bench_learner.txt 450 "$PY" bench/learner.py
echo "exit codes:$RCS"
grep "^{" "$OUT/bench_learner.txt" | tail -n 1
