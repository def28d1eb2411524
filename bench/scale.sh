#!/usr/bin/env bash
# make bench-scale: refresh at scale. BENCH_TENANTS x 10 refresh-token
# credentials (default 1000 x 10) in an encrypted store, tokens living
# BENCH_LIFETIME s (default 60)
# and refreshed at 70% of their lifetime before expiry (about 555 refreshes
# a second for 10,000), against bench/tokend (a C token endpoint). Reports:
# time until the mount is ready, first read of every credential, resident
# memory, refreshes per second (mean, and the busiest and quietest second),
# the daemon's CPU, and every token a sampler read that was expired or
# damaged. The store is on disk (under /tmp) unless BENCH_STORE=tmpfs.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${CREDFS_BUILD:-$here/build}
python=${PYTHON:-/usr/bin/python3}
secs=${BENCH_SCALE_SECONDS:-60}
tenants=${BENCH_TENANTS:-1000}
providers=10
lifetime=${BENCH_LIFETIME:-60}
fraction=0.7
if [ "${BENCH_STORE:-disk}" = tmpfs ]; then
	work=$(mktemp -d /dev/shm/credfs-scale.XXXXXX)
else
	work=$(mktemp -d /tmp/credfs-scale.XXXXXX)
fi
mnt=$work/mnt
pids=()

cleanup() {
	trap - EXIT INT TERM
	if grep -qs " $mnt fuse" /proc/mounts; then
		fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt"
	fi
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
		# The daemon is no child of ours: wait for it by pid.
		for _ in $(seq 100); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.1
		done
	done
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

mkdir -p "$mnt"
"$build/bench-tokend" "$lifetime" "$work/port" "$work/stats" &
tokend=$!
pids+=("$tokend")
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(cat "$work/port")
printf 'secret\n' > "$work/secret"
chmod 600 "$work/secret"

"$python" - "$work" "$port" "$tenants" "$providers" "$fraction" <<'PY'
import json, sys
work, port, tenants, providers, fraction = sys.argv[1:]
prov = {"token_url": "http://127.0.0.1:%s/token" % port,
        "client_id": "bench", "client_secret_file": work + "/secret",
        "grant": "refresh_token", "refresh_fraction": float(fraction),
        "max_concurrency": 8,
        # Under the 10 s floor (BENCH_LIFETIME), the provider's word.
        "min_lifetime_s": 1}
names = ["p%d" % j for j in range(int(providers))]
json.dump({"log_level": "warning",
           "providers": {p: prov for p in names},
           "tenants": {"t%04d" % i: {"credentials": {
               p: {"scopes": ["read"]} for p in names}}
               for i in range(int(tenants))},
           "store": {"dir": work + "/store",
                     "key_file": work + "/master.key"}},
          open(work + "/config.json", "w"))
PY
"$build/credfsctl" init --config "$work/config.json" > /dev/null
t0=$(date +%s%N)
"$build/bench-seed" "$work/store" "$work/master.key" "$tenants" \
	"$providers" "$lifetime" "$fraction" > /dev/null
t1=$(date +%s%N)
echo "seeded $((tenants * providers)) records in $(((t1 - t0) / 1000000)) ms" \
	"(each written durably)"

t0=$(date +%s%N)
"$build/credfs" --config "$work/config.json" --pid-file "$work/pid" \
	"$mnt" 2> "$work/credfs.log"
t1=$(date +%s%N)
pid=$(cat "$work/pid")
pids+=("$pid")

"$python" - "$mnt" "$pid" "$secs" "$tenants" "$providers" \
	"$(((t1 - t0) / 1000000))" "$tokend" "$work/stats" <<'PY'
import os, random, signal, sys, time
mnt, pid, secs, tenants, providers, ready, tokend, stats = sys.argv[1:]
secs, tenants, providers = float(secs), int(tenants), int(providers)
tick = os.sysconf("SC_CLK_TCK")

def fnv64(s):
    h = 0xcbf29ce484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return h

def check(tok):
    """0 valid, 1 expired, 2 damaged."""
    try:
        body, mac = tok.rsplit(".", 1)
        _, exp, _ = body.split(".")
        if fnv64(body) != int(mac, 16):
            return 2
        return 1 if int(exp) <= time.time() * 1000 else 0
    except ValueError:
        return 2

def path(i, j):
    return "%s/tenants/t%04d/p%d/access_token" % (mnt, i, j)

def rss_kib(key):
    for line in open("/proc/%s/status" % pid):
        if line.startswith(key):
            return int(line.split()[1])

def cpu_s():
    f = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick

print("ready (credfs returned) after %.2f s" % (int(ready) / 1000))
t = time.time()
bad = [0, 0, 0]
for i in range(tenants):
    for j in range(providers):
        with open(path(i, j)) as f:
            bad[check(f.read())] += 1
print("first read of all %d credentials: %.2f s, %d valid, %d expired, "
      "%d damaged" % (tenants * providers, time.time() - t, *bad))
print("resident memory after start: %.1f MiB" % (rss_kib("VmRSS") / 1024))

start_wall = time.time()
c0, t0 = cpu_s(), time.monotonic()
reads, bad = 0, [0, 0, 0]
# About 1,000 reads a second: a check on every token served, not a load
# test of the read path (that is make bench).
while time.monotonic() - t0 < secs:
    with open(path(random.randrange(tenants),
                   random.randrange(providers))) as f:
        bad[check(f.read())] += 1
    reads += 1
    time.sleep(0.001)
cpu = (cpu_s() - c0) / (time.monotonic() - t0)
end_wall = time.time()
print("sampler: %d reads in %.0f s, %d expired, %d damaged"
      % (reads, secs, bad[1], bad[2]))
print("daemon CPU: %.2f cores; peak resident memory %.1f MiB"
      % (cpu, rss_kib("VmHWM") / 1024))
os.kill(int(tokend), signal.SIGTERM)
for _ in range(100):
    if os.path.exists(stats):
        break
    time.sleep(0.1)
time.sleep(0.2)
counts = dict((int(a), int(b)) for a, b in
              (l.split() for l in open(stats)))
# Whole seconds inside the sampler's window.
window = [counts.get(sec, 0) for sec in
          range(int(start_wall) + 1, int(end_wall))] or [0]
print("refreshes: %.0f per second over %d s (busiest second %d, "
      "quietest %d)" % (sum(window) / len(window), len(window),
                        max(window), min(window)))
PY
