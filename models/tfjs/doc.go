// Package tfjs holds Vigil's converter from TF.js graph models to ONNX (tfjs_to_onnx.py, run
// by Debian's python3-onnx) and its test: each model a manifest builds from npm is converted
// twice (the same sha256, the one the manifest pins) and run on real frames by ONNX Runtime
// and by TF.js itself (check/run_tfjs.mjs, the pure-JavaScript CPU backend), within a stated
// tolerance. The resolver runs the converter through models.Builder; there is no Go API here.
package tfjs
