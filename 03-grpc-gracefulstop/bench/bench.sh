#!/usr/bin/env bash
# Benchmarks for 03-grpc-gracefulstop. Prints two figures:
#  1. RPCs/s of 030, 040, 050 and 070 versus 020-shutdown-thread (what the
#     health service, the drain machinery and the call tracking cost while
#     serving; target: within 3%). The stages run interleaved, one round of
#     each after the other (020 030 040 050 070 020 030 ...), so that a
#     machine that gets busier slows them all alike; each stage's median
#     and interquartile range are printed, and, per stage, the median and
#     the range of its ratio to the 020 of the same round (paired: the
#     load of the machine changes less within a round than across rounds).
#     030 runs 020's serving code path: its ratio is the noise floor.
#  2. Time from the last in-flight RPC's reply to the process exit, after
#     SIGTERM, seen by a caller in another process (bench/exit_after_reply.cpp)
#     that closes its channel, keeps it open and idle, keeps it open and
#     keeps sending, or keeps it open next to a second, idle, long-lived
#     client; with the ratio of each to the closing caller's. --drain-ms 0:
#     the drain is a deliberate wait, not overhead. First, per binary, the
#     kernel's part alone (SIGKILL of the idle server). 070-quick-exit-static
#     is 070 linked statically, with one malloc arena.
#
#   03-grpc-gracefulstop/bench/bench.sh [BUILD_DIR (default build/default)] [ROUNDS (default 9)] [RPCS per round (default 5000)]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build/default}
rounds=${2:-9}
rpcs=${3:-5000}
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
  for _ in $(seq 100); do grep -q '^ready port=[0-9]* pid' "$out" 2>/dev/null && break; sleep 0.05; done
  port=$(sed -n 's/^ready port=\([0-9]*\).*/\1/p' "$out")
  "$client" --connect "127.0.0.1:$port" --redis "127.0.0.1:$redis_port" --rpcs "$rpcs" --rate 0 \
    --concurrency 32 --work-ms 0 --id-prefix "b$RANDOM" | sed -n 's/.*(\([0-9]*\) RPCs\/s).*/\1/p'
  kill -TERM "$pid"; wait "$pid" || true
}

echo "machine: $(nproc) cores, $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg)"
quartiles() { sort -n | awk '{a[NR]=$1} END {printf "%s..%s", a[int((NR-1)/4)+1], a[int((NR-1)*3/4)+1]}'; }
stages="020-shutdown-thread 030-shutdown-deadline 040-health-drain 050-last-call-closes 070-quick-exit"
echo "1. throughput: $rpcs Work RPCs (work_ms 0, SADD to Redis), 32 in flight, $rounds rounds, stages interleaved"
for stage in $stages; do : >"$work/${stage%%-*}"; done
for _ in $(seq "$rounds"); do
  for stage in $stages; do
    case $stage in 020-*|030-*) throughput "$stage" ;; *) throughput "$stage" --drain-ms 0 ;; esac >>"$work/${stage%%-*}"
  done
done
for stage in $stages; do
  printf "   %-22s median %5s RPCs/s  IQR %s  (rounds: %s)\n" "$stage" "$(median <"$work/${stage%%-*}")" \
    "$(quartiles <"$work/${stage%%-*}")" "$(tr '\n' ' ' <"$work/${stage%%-*}")"
done
for stage in $stages; do
  [ "${stage%%-*}" = 020 ] && continue
  paste "$work/020" "$work/${stage%%-*}" | awk '{printf "%.2f\n", ($2-$1)*100/$1}' >"$work/ratio"
  printf "   %s vs 020, paired per round: median %+.1f%%  range %s%%  IQR %s%%\n" "${stage%%-*}" \
    "$(median <"$work/ratio")" "$(sort -n "$work/ratio" | sed -n '1p;$p' | paste -sd' ' | sed 's/ /../')" \
    "$(quartiles <"$work/ratio")"
done
echo "   (030 serves exactly as 020 does: its line is the noise floor)"

echo "2. last in-flight reply -> exit: 1 RPC of 300 ms in flight at SIGTERM, $rounds runs per kind of caller"
"$bin/exit-after-reply" --runs "$rounds" --work-ms 300 --hold-client "$bin/hold-client" -- \
  "$bin/050-last-call-closes" "$bin/060-connection-age" "$bin/070-quick-exit" "$bin/070-quick-exit-static"
