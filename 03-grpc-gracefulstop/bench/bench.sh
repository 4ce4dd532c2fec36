#!/usr/bin/env bash
# Benchmarks for 03-grpc-gracefulstop. Prints two figures:
#  1. RPCs/s of 040-health-drain and 050-last-call-closes versus
#     020-shutdown-thread (what the health service, the drain machinery and
#     the call tracking cost while serving; target: within 3%), and versus
#     030 (same handlers, no drain) to tell the costs apart. The stages run
#     interleaved, round after round, so that a machine that gets busier
#     slows them all alike.
#  2. Time from the last in-flight RPC's reply to the process exit, after
#     SIGTERM, seen by a caller in another process (bench/exit_after_reply.cpp)
#     that closes its channel, keeps it open, or keeps it open next to a
#     second, idle, long-lived client. --drain-ms 0: the drain is a
#     deliberate wait, not overhead.
#
#   03-grpc-gracefulstop/bench/bench.sh [BUILD_DIR (default build/default)] [ROUNDS (default 9)]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build/default}
rounds=${2:-9}
bin=$build/03-grpc-gracefulstop
client=$bin/client
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

# A private redis-server on a random free loopback port.
for _ in $(seq 20); do
  redis_port=$(shuf -i 20000-60000 -n 1)
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && continue  # taken
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >/dev/null &
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break 2; sleep 0.1; done
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int((NR-1)*p/100)+1; print a[i]}'; }

runs=0
throughput() {  # stage extra-args... -> RPCs/s of one round
  local stage=$1; shift
  local out="$work/server.$((++runs)).out" port
  "$bin/$stage" --port 0 --redis "127.0.0.1:$redis_port" "$@" >"$out" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do grep -q '^ready' "$out" 2>/dev/null && break; sleep 0.05; done
  port=$(sed -n 's/^ready port=\([0-9]*\).*/\1/p' "$out")
  "$client" --connect "127.0.0.1:$port" --redis "127.0.0.1:$redis_port" --rpcs 20000 --rate 0 \
    --concurrency 32 --work-ms 0 --id-prefix "b$RANDOM" | sed -n 's/.*(\([0-9]*\) RPCs\/s).*/\1/p'
  kill -TERM "$pid"; wait "$pid" || true
}

echo "machine: $(nproc) cores, $(uname -sr)"
echo "1. throughput: 20000 Work RPCs (work_ms 0, SADD to Redis), 32 in flight, $rounds rounds each, interleaved"
: >"$work/020"; : >"$work/030"; : >"$work/040"; : >"$work/050"
for _ in $(seq "$rounds"); do
  throughput 020-shutdown-thread >>"$work/020"
  throughput 030-shutdown-deadline >>"$work/030"
  throughput 040-health-drain --drain-ms 0 >>"$work/040"
  throughput 050-last-call-closes --drain-ms 0 >>"$work/050"
done
for stage in 020-shutdown-thread 030-shutdown-deadline 040-health-drain 050-last-call-closes; do
  printf "   %-22s median %s RPCs/s  (rounds: %s)\n" "$stage" "$(median <"$work/${stage%%-*}")" \
    "$(tr '\n' ' ' <"$work/${stage%%-*}")"
done
t020=$(median <"$work/020"); t030=$(median <"$work/030"); t040=$(median <"$work/040"); t050=$(median <"$work/050")
awk -v a="$t020" -v b="$t040" 'BEGIN {printf "   040 vs 020: %+.1f%%\n", (b-a)*100/a}'
awk -v a="$t020" -v b="$t050" 'BEGIN {printf "   050 vs 020: %+.1f%%\n", (b-a)*100/a}'
awk -v a="$t030" -v b="$t040" 'BEGIN {printf "   040 vs 030 (health + drain alone): %+.1f%%\n", (b-a)*100/a}'
awk -v a="$t020" -v b="$t030" 'BEGIN {printf "   030 vs 020 (same code path while serving: the noise floor): %+.1f%%\n", (b-a)*100/a}'

echo "2. last in-flight reply -> exit: 1 RPC of 300 ms in flight at SIGTERM, $rounds runs per kind of caller"
"$bin/exit-after-reply" --runs "$rounds" --work-ms 300 --hold-client "$bin/hold-client" -- \
  "$bin/040-health-drain" "$bin/050-last-call-closes"
