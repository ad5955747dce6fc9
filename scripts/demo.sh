#!/usr/bin/env bash
# demo.sh (make demo): starts vigild on its embedded defaults (SQLite and tokens in ./data,
# localhost only), creates a local admin token on first start, shows health and the loaded
# models, and keeps serving until Ctrl-C. VIGIL_DEMO_ONCE=1 stops after showing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

data=${VIGIL_DATA_DIR:-$root/data}
listen=${VIGIL_LISTEN:-127.0.0.1:7443}
http=${VIGIL_HTTP:-127.0.0.1:7480}
bin=$root/bin

mkdir -p "$data"
chmod 700 "$data"
token_file=$data/demo-admin.token
if [ ! -s "$token_file" ]; then
  (umask 077; "$bin/vigil" token add --data-dir "$data" --role admin --principal demo-admin >"$token_file" 2>/dev/null)
  echo "demo: created an admin token for this machine in $token_file (tokens file: $data/tokens.json)"
fi
token=$(cat "$token_file")
reviewer_file=$data/demo-reviewer.token
if [ ! -s "$reviewer_file" ]; then
  (umask 077; "$bin/vigil" token add --data-dir "$data" --role reviewer --principal demo-reviewer >"$reviewer_file" 2>/dev/null)
fi
reviewer=$(cat "$reviewer_file")
pacs_file=$data/demo-pacs.token
if [ ! -s "$pacs_file" ]; then
  (umask 077; "$bin/vigil" token add --data-dir "$data" --role pacs-worker --principal demo-pacs >"$pacs_file" 2>/dev/null)
fi
pacs=$(cat "$pacs_file")

log=$data/vigild.log
"$bin/vigild" --data-dir "$data" --listen "$listen" --http "$http" >"$log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
trap 'exit 0' INT TERM

for _ in $(seq 1 120); do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "demo: vigild stopped during start-up; its log ($log) ends:" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
  "$bin/vigil" --server "$listen" --timeout 1s health >/dev/null 2>&1 && break
  sleep 0.5
done

cat <<EOT

Vigil is running.
  gRPC           $listen  (log: $log)
  reviewer page  http://$http/   sign in with: $reviewer
  metrics        http://$http/metrics
  admin token    $token   (saved in $token_file)

\$ bin/vigil --server $listen --token \$TOKEN health
$("$bin/vigil" --server "$listen" --token "$token" health)

\$ bin/vigil --server $listen --token \$TOKEN models
$("$bin/vigil" --server "$listen" --token "$token" models)

\$ bin/vigil phantoms --out $data/phantoms --count 4     # synthetic loops with known lesions
$("$bin/vigil" phantoms --out "$data/phantoms" --count 4 --seed 100000)

\$ bin/vigil --server $listen --token \$PACS_TOKEN analyze <real ultrasound files> <phantoms>
$(shopt -s nullglob; files=("$root"/../shared/data/dicom/ultrasound/*.dcm "$data"/phantoms/*.dcm); "$bin/vigil" --server "$listen" --token "$pacs" --timeout 120s analyze "${files[@]}" 2>&1)

(us-lesion-demo is a demonstration model trained on synthetic phantoms only: on real
ultrasound its findings are not meaningful. It is not a clinical model.)

\$ bin/vigil --server $listen --token \$TOKEN review counts
$("$bin/vigil" --server "$listen" --token "$reviewer" review counts)

Try:
  bin/grpcurl -H 'authorization: Bearer $token' -plaintext $listen list
  bin/vigil --server $listen --token $token models --json
  bin/vigil --server $listen --token $reviewer review list
EOT

if [ "${VIGIL_DEMO_ONCE:-}" = 1 ]; then
  exit 0
fi
echo
echo "Ctrl-C stops the server."
wait "$pid"
