#!/usr/bin/env bash
# demo.sh (make demo): starts vigild on its embedded defaults (SQLite and tokens in ./data,
# localhost only), creates local tokens on first start, shows health and the loaded models,
# analyses the ultrasound files, streams the walkers clip and a real fall through the bridge,
# shows the worklist, and keeps serving until Ctrl-C. VIGIL_DEMO_ONCE=1 stops after showing.
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
bridge_file=$data/demo-bridge.token
if [ ! -s "$bridge_file" ]; then
  (umask 077; "$bin/vigil" token add --data-dir "$data" --role ward-bridge --principal demo-bridge >"$bridge_file" 2>/dev/null)
fi
bridge=$(cat "$bridge_file")
shared=${VIGIL_SHARED_DATA:-$root/../shared/data}

# The demo's material: the shared data folder when it is beside the clone, otherwise what
# make deps took from package registries and what samples/ holds under an open licence.
hc18=$shared/ultrasound-hc18
[ -f "$hc18/train.csv" ] || hc18=$root/samples/hc18
walkers=$shared/video/walkers-vtest.avi
[ -f "$walkers" ] || walkers=/usr/share/doc/opencv-doc/examples/data/vtest.avi # Debian's opencv-doc
ultrasound=("$shared"/dicom/ultrasound/*.dcm)
ultrasound_note=""
if [ ! -f "${ultrasound[0]}" ]; then
  ultrasound=(/usr/lib/python3/dist-packages/pydicom/data/test_files/ExplVR_BigEnd.dcm "$root/.deps/samples/US-PAL-8-10x-echo.dcm")
  ultrasound_note="
   ExplVR_BigEnd.dcm (python3-pydicom) is in the retired big-endian transfer syntax: it shows
   how a file the reader refuses is answered. US-PAL-8-10x-echo.dcm (octave-dicom) is a real
   echocardiogram, which no model's routes take.)"
fi
fall=$shared/video/falls-upfall/A4_S1_T1_Cam1.mp4

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

\$ bin/vigil fetal-heads --out $data/fetal-heads --count 4   # real fetal heads (HC18, held-apart subjects) as calibrated OB DICOM
$("$bin/vigil" fetal-heads --data "$hc18" --out "$data/fetal-heads" --count 4)

\$ bin/vigil --server $listen --token \$PACS_TOKEN analyze <fetal heads> <real ultrasound files> <phantoms>
  (no model is named: each model's routes choose. OB or fetal exams go to fetal-head; the
   phantom lesion model runs only on phantoms; other exams are left alone.${ultrasound_note:-)}
$(shopt -s nullglob; files=("$data"/fetal-heads/*.dcm "${ultrasound[@]}" "$data"/phantoms/*.dcm); "$bin/vigil" --server "$listen" --token "$pacs" --timeout 120s analyze "${files[@]}" 2>&1)

\$ bin/vigil --server $listen --token \$PACS_TOKEN analyze --json $data/fetal-heads/<first>   # measurements with unit and quality
$(shopt -s nullglob; files=("$data"/fetal-heads/*.dcm); "$bin/vigil" --server "$listen" --token "$pacs" --timeout 120s analyze --json "${files[0]}" 2>&1 | sed -n '/"measurements"/,/\]/p')

(us-lesion-demo is a demonstration model trained on synthetic phantoms only; it is not a
clinical model, and by default it runs on nothing else.)

\$ bin/vigil --server $listen --token \$BRIDGE_TOKEN bridge --camera lobby --fps 7 --source walkers-vtest.avi
  (the OpenCV sample clip is PETS 2009 S2.L1, filmed at about 7 frames/s; its header says 10.
   Shown: every 100th frame, each track's final gait with its fall-risk signs, the last stats.)
$("$bin/vigil" --server "$listen" --token "$bridge" --timeout 600s bridge --camera lobby --fps 7 --source "$walkers" 2>&1 |
  awk '/^frame [0-9]*00:/ {print; next} /^gait .*\(final/ {print; risk=1; next} /^  fall risk/ {if (risk) print; next} {risk=0} /^stats/ {last=$0} /^[^fgs ]/ {print} END {print last}')

\$ bin/vigil --server $listen --token \$BRIDGE_TOKEN bridge --camera office --source A4_S1_T1_Cam1.mp4   # UP-Fall: a fall
$(if [ -f "$fall" ]; then "$bin/vigil" --server "$listen" --token "$bridge" --timeout 120s bridge --camera office --source "$fall" 2>&1 | grep -v '^frame '; else echo "(skipped: no openly licensed clip of a fall is published in a registry this project can fetch, and
 UP-Fall is research footage the project may not ship. With the shared data folder beside the
 clone the demo streams UP-Fall A4 here; the walkers above went through the same fall path and
 raised no alert. docs/FALLS.md measures falls on 8 sources.)"; fi)

\$ bin/vigil --server $listen --token \$TOKEN review list --limit 5     # falls head the worklist
$("$bin/vigil" --server "$listen" --token "$reviewer" review list --limit 5)

\$ bin/vigil --server $listen --token \$TOKEN review counts
$("$bin/vigil" --server "$listen" --token "$reviewer" review counts)

Try:
  bin/grpcurl -H 'authorization: Bearer $token' -plaintext $listen list
  bin/vigil --server $listen --token $token models --json
  bin/vigil --server $listen --token $reviewer review list
  bin/vigil --server $listen --token $reviewer review show <finding ID> --overlay keyframe.png
  bin/vigil --server $listen --token $bridge bridge --camera lobby --fps 7 --realtime --source $walkers
EOT

if [ "${VIGIL_DEMO_ONCE:-}" = 1 ]; then
  exit 0
fi
echo
echo "Ctrl-C stops the server."
wait "$pid"
