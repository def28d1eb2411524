#!/usr/bin/env bash
# make bench: the read-path benchmark. For each configuration, N reader
# threads open + read + close a token for BENCH_SECONDS; every read is
# checked (torn, expired, older than already seen). Baselines from the same
# run: the same token in a tmpfs file (/dev/shm), and a loopback HTTP server
# handing it out per request (the cloud metadata-server pattern). Ratios
# are against tmpfs at the same thread count. See docs/performance.md.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${CREDFS_BUILD:-$here/build}
python=${PYTHON:-/usr/bin/python3}
secs=${BENCH_SECONDS:-5}
threads=${BENCH_THREADS:-"1 16"}
work=$(mktemp -d /tmp/credfs-bench.XXXXXX)
shm=$(mktemp -d /dev/shm/credfs-bench.XXXXXX)
pids=()
mounts=()

cleanup() {
	trap - EXIT INT TERM
	for m in "${mounts[@]}"; do
		fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" || true
	done
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$work" "$shm"
}
trap cleanup EXIT INT TERM

wait_file() {
	for _ in $(seq 100); do [ -s "$1" ] && return 0; sleep 0.1; done
	echo "bench: $1 did not appear" >&2
	exit 1
}

# The tmpfs baseline: a valid bench token that lives a day.
"$python" -c '
import sys, time
sys.path.insert(0, "'"$here"'/tests")
from fake_provider import fnv64
body = "bench.%d.1" % int((time.time() + 86400) * 1000)
open(sys.argv[1], "w").write("%s.%016x" % (body, fnv64(body)))
' "$shm/token"

"$build/bench-httpd" "$shm/token" "$work/http.port" &
pids+=($!)
wait_file "$work/http.port"

printf 'secret\n' > "$work/secret"
chmod 600 "$work/secret"

# provider NAME LIFETIME: a fake provider issuing bench tokens.
provider() {
	"$python" "$here/tests/fake_provider.py" --bench-tokens \
		--lifetime "$2" --client bench:secret --port-file "$work/$1.port" \
		> /dev/null 2>&1 &
	pids+=($!)
	wait_file "$work/$1.port"
}

# mount NAME PROVIDER REFRESH_FRACTION [credfs options...]
mount_credfs() {
	local name=$1 prov=$2 fraction=$3
	shift 3
	cat > "$work/$name.json" <<JSON
{ "log_level": "warning", "audit_log": "$work/$name.audit",
  "providers": { "idp": { "token_url": "http://127.0.0.1:$(cat "$work/$prov.port")/token",
    "client_id": "bench", "client_secret_file": "$work/secret",
    "refresh_fraction": $fraction, "min_lifetime_s": 0.1 } },
  "tenants": { "t": { "readers": { "uids": [0] },
    "credentials": { "idp": { "scopes": [] } } } } }
JSON
	mkdir -p "$work/$name"
	"$build/credfs" "$@" --config "$work/$name.json" "$work/$name" \
		2> "$work/$name.log"
	mounts+=("$work/$name")
}

printf '%-30s %7s %10s %8s %8s %7s  %s\n' configuration threads ops/s \
	p50_us p99_us ratio errors
declare -A base
fail=0
run() { # LABEL THREADS reader-args...
	local label=$1 t=$2 out ops
	shift 2
	out=$("$build/bench-reader" --threads "$t" --seconds "$secs" "$@") ||
		fail=1
	ops=$(sed -n 's/.*ops_per_s=\([0-9]*\).*/\1/p' <<<"$out")
	[ "$label" = tmpfs ] && base[$t]=$ops
	printf '%-30s %7s %10s %8s %8s %7s  %s\n' "$label" "$t" "$ops" \
		"$(sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p' <<<"$out")" \
		"$(sed -n 's/.*p99_us=\([0-9.]*\).*/\1/p' <<<"$out")" \
		"$(awk -v a="$ops" -v b="${base[$t]}" 'BEGIN { printf "%.2f", a / b }')" \
		"$(grep -o 'io_errors=.*' <<<"$out")"
}

# 2 s tokens refreshed at half their life: a rotation about every second.
# 200 ms tokens refreshed at 90% of their life (minus up to 18 ms of
# jitter): a rotation about every 10 ms, with tokens that stay valid long
# enough to be checked.
provider slow 2
provider fast 0.2
mount_credfs audited-1s slow 0.5
mount_credfs kernel-1s slow 0.5 -o cache=kernel
mount_credfs audited-10ms fast 0.9
mount_credfs kernel-10ms fast 0.9 -o cache=kernel
tok=tenants/t/idp/access_token

for t in $threads; do
	run tmpfs "$t" --file "$shm/token"
	run loopback-http "$t" --http "127.0.0.1:$(cat "$work/http.port")"
	run "audited, rotating 1s" "$t" --file "$work/audited-1s/$tok"
	run "cache=kernel, rotating 1s" "$t" --file "$work/kernel-1s/$tok"
	run "audited, rotating 10ms" "$t" --file "$work/audited-10ms/$tok"
	run "cache=kernel, rotating 10ms" "$t" --file "$work/kernel-10ms/$tok"
done
for m in audited-1s kernel-1s audited-10ms kernel-10ms; do
	grep -o '"refresh_count": [0-9]*' "$work/$m/tenants/t/idp/status.json" |
		sed "s/^/$m: /"
done
exit $fail
