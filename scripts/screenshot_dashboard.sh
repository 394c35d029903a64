#!/usr/bin/env bash
# A screenshot of a study's page in optuna-dashboard, taken by headless Chromium (Debian: apt-get install -y chromium).
# Not part of CI: it checks by eye what tests/test_dashboard.py checks through the HTTP API.
#
#   scripts/screenshot_dashboard.sh STORAGE_URL STUDY_NAME OUT.png [ARTIFACT_DIR] [PAGE]
#
# PAGE is the part of the study's URL after /dashboard/studies/<id>, e.g. /trials, /trialTable, /analytics or /note (default: the study's
# main page). PYTHON and OPTUNA_DASHBOARD name the interpreter and dashboard to use (default: those on PATH).
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
storage=$1 name=$2 out=$3 artifacts=${4:-} page=${5:-}
python=${PYTHON:-python3}
dashboard=${OPTUNA_DASHBOARD:-optuna-dashboard}
browser=${CHROMIUM:-}
for name in chromium chromium-browser google-chrome google-chrome-stable; do
  [ -n "$browser" ] && break
  command -v "$name" >/dev/null && browser=$(command -v "$name")
done
[ -n "$browser" ] || { echo "no Chromium or Chrome found (chromium, chromium-browser, google-chrome): apt-get install -y chromium, or set CHROMIUM=/path/to/browser" >&2; exit 2; }

port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
work=$(mktemp -d)
"$dashboard" "$storage" --host 127.0.0.1 --port "$port" ${artifacts:+--artifact-dir "$artifacts"} >"$work/dashboard.log" 2>&1 &
server=$!
trap 'status=$?; kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; rm -rf "$work"; exit $status' EXIT

base="http://127.0.0.1:$port"
for _ in $(seq 100); do
  "$python" -c "import urllib.request; urllib.request.urlopen('$base/api/meta', timeout=1)" 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$work/dashboard.log" >&2; exit 1; }
  sleep 0.3
done
study_id=$("$python" - "$base" "$name" <<'PY'
import json, sys, urllib.request
base, name = sys.argv[1:]
studies = json.load(urllib.request.urlopen(f"{base}/api/studies"))["study_summaries"]
match = [s["study_id"] for s in studies if s["study_name"] == name]
sys.exit(f"no study {name!r}; the storage holds {[s['study_name'] for s in studies]}") if not match else print(match[0])
PY
)

# A fresh profile, and no background traffic: the machine may have no network at all.
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$work/profile" --hide-scrollbars \
  --virtual-time-budget=15000 --window-size="${WINDOW_SIZE:-1400,1800}" --screenshot="$(realpath -m "$out")" \
  "$base/dashboard/studies/$study_id$page" >"$work/chromium.log" 2>&1 || { cat "$work/chromium.log" >&2; exit 1; }
echo "$out: $base/dashboard/studies/$study_id$page"
