#!/usr/bin/env bash
# make demo: start the fake provider, mount credfs, show the tree and the
# status, read a token twice across a refresh, add a refresh-token
# credential to the running mount, then unmount and stop everything. DEMO_MNT=DIR mounts there; DEMO_HOLD=1 keeps the mount until
# Ctrl-C.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${CREDFS_BUILD:-$here/build}
python=${PYTHON:-/usr/bin/python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/credfs-demo.XXXXXX")
mnt=${DEMO_MNT:-$work/mnt}
prov_pid=""
daemon_pid=""

cleanup() {
	trap - EXIT INT TERM
	if grep -qs " $(realpath -m "$mnt") fuse" /proc/mounts; then
		fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt"
	fi
	if [ -n "$daemon_pid" ]; then
		for _ in $(seq 50); do
			kill -0 "$daemon_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill "$daemon_pid" 2>/dev/null || true
	fi
	if [ -n "$prov_pid" ]; then
		kill "$prov_pid" 2>/dev/null || true
		wait "$prov_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

show() {
	printf '\n$ %s\n' "$*"
	"$@"
}

# A fake provider on 127.0.0.1 that issues 10-second tokens (the shortest
# lifetime credfs takes as given: min_lifetime_s).
"$python" "$here/tests/fake_provider.py" --port-file "$work/port" \
	--lifetime 10 --client demo-client:demo-secret &
prov_pid=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(cat "$work/port")

umask 077
printf 'demo-secret\n' > "$work/client-secret"
cat > "$work/config.json" <<JSON
{
  "providers": {
    "google": {
      "token_url": "http://127.0.0.1:$port/token",
      "client_id": "demo-client",
      "client_secret_file": "client-secret",
      "grant": "client_credentials"
    },
    "slack": {
      "token_url": "http://127.0.0.1:$port/token",
      "client_id": "demo-client",
      "client_secret_file": "client-secret",
      "grant": "refresh_token"
    }
  },
  "tenants": {
    "acme": { "credentials": {
      "google": { "scopes": ["calendar.readonly", "drive.file"] },
      "slack": { "scopes": ["chat:write"] } } },
    "globex": { "credentials": { "google": { "scopes": ["gmail.send"] } } }
  },
  "store": { "dir": "store", "key_file": "master.key" }
}
JSON
"$build/credfsctl" init --config "$work/config.json"

mkdir -p "$mnt"
"$build/credfs" --config "$work/config.json" --pid-file "$work/credfs.pid" \
	"$mnt" 2> "$work/credfs.log"
daemon_pid=$(cat "$work/credfs.pid")
echo "credfs is mounted on $mnt (pid $daemon_pid)"

cred="$mnt/tenants/acme/google"
show ls -l "$cred"
show cat "$mnt/status"
show cat "$cred/status"

fp() { printf '%s' "$1" | sha256sum | cut -c1-8; }
tok1=$(cat "$cred/access_token")
printf '\n$ cat %s\n%s... (%d bytes, fingerprint %s)\n' "$cred/access_token" \
	"${tok1:0:12}" "${#tok1}" "$(fp "$tok1")"

wait_s=$(awk -F': ' '/^next_refresh_in:/ { print $2 + 1 }' "$cred/status")
echo
echo "The daemon refreshes it in the background in ${wait_s}s; waiting..."
sleep "$wait_s"
tok2=$(cat "$cred/access_token")
printf '\n$ cat %s\n%s... (%d bytes, fingerprint %s)\n' "$cred/access_token" \
	"${tok2:0:12}" "${#tok2}" "$(fp "$tok2")"
if [ "$tok1" != "$tok2" ]; then
	echo "token changed across the refresh: the reader did nothing"
else
	echo "token did not change" >&2
	exit 1
fi
show grep -E '^(state|refresh_count|expires_in|next_refresh_in):' \
	"$cred/status"

# A refresh-token credential: declared in the config, absent until its
# refresh token is added (from stdin, never argv), then served at once.
echo
echo "acme/slack uses a refresh token; it has no directory until it is added:"
show ls "$mnt/tenants/acme"
"$python" - "$port" > "$work/slack.rt" <<'PY'
import json, sys, urllib.request
req = urllib.request.Request(
    "http://127.0.0.1:%s/_control/refresh_token" % sys.argv[1],
    data=json.dumps({"client_id": "demo-client",
                     "scope": "chat:write"}).encode())
print(json.load(urllib.request.urlopen(req))["refresh_token"])
PY
printf '\n$ credfsctl add acme slack --config config.json < slack.rt\n'
"$build/credfsctl" add acme slack --config "$work/config.json" \
	< "$work/slack.rt"
rm -f "$work/slack.rt"
show ls "$mnt/tenants/acme"
show grep -E '^(grant|state|generation):' "$mnt/tenants/acme/slack/status"
show "$build/credfsctl" list --config "$work/config.json"

if [ "${DEMO_HOLD:-0}" = 1 ]; then
	echo
	echo "Holding the mount at $mnt; press Ctrl-C to unmount and stop."
	while kill -0 "$daemon_pid" 2>/dev/null; do sleep 1; done
fi
echo
echo "Unmounting and stopping the fake provider."
