package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/models"
)

// peerModel is a model both sides run, with the input the peer script fills with a constant.
type peerModel struct {
	name  string
	shape []int64
	dtype models.DType
}

var peerModels = []peerModel{
	{"fastestdet", []int64{1, 3, 352, 352}, models.Float32},
	{"movenet-lightning", []int64{1, 192, 192, 3}, models.Int32},
}

// measurePeer runs each model at 1 and 2 intra-op threads through Vigil's session, the bare
// session and onnxruntime-node (same ONNX Runtime version, same threads, same constant input),
// in interleaved rounds.
func measurePeer(ctx context.Context, o Options, r *Report) error {
	script := filepath.Join(o.PeerDir, "bench.js")
	node, err := exec.LookPath("node")
	if err != nil {
		r.note("peer: node is not installed; onnxruntime-node not measured")
		return nil
	}
	if _, err := os.Stat(filepath.Join(o.PeerDir, "node_modules", "onnxruntime-node", "package.json")); err != nil {
		r.note("peer: onnxruntime-node is not installed in %s (make deps installs it); not measured", o.PeerDir)
		return nil
	}
	runs := 200
	if o.WardFrames < 20 { // a quick run
		runs = 10
	}
	for _, threads := range []int{1, 2} {
		engine, err := inference.Open(inference.Config{LibraryPath: o.Engine.LibraryPath, Provider: "cpu", Workers: 1, IntraOpThreads: threads})
		if err != nil {
			return err
		}
		err = func() error {
			defer engine.Close()
			for _, pm := range peerModels {
				o.Progress(fmt.Sprintf("peer: %s at %d thread(s), Vigil and onnxruntime-node", pm.name, threads))
				if err := peerCompare(ctx, engine, node, script, o, r, pm, threads, runs); err != nil {
					return fmt.Errorf("%s: %w", pm.name, err)
				}
			}
			return nil
		}()
		if err != nil {
			return err
		}
	}
	return nil
}

func peerCompare(ctx context.Context, engine *inference.Engine, node, script string, o Options, r *Report, pm peerModel, threads, runs int) error {
	sess, err := load(ctx, engine, o, pm.name, nil)
	if err != nil {
		return err
	}
	defer sess.Close()
	n := int64(1)
	for _, d := range pm.shape {
		n *= d
	}
	var input inference.Tensor
	if pm.dtype == models.Int32 {
		data := make([]int32, n)
		for i := range data {
			data[i] = 128
		}
		input, err = inference.NewTensor(pm.shape, data)
	} else {
		data := make([]float32, n)
		for i := range data {
			data[i] = 0.5
		}
		input, err = inference.NewTensor(pm.shape, data)
	}
	if err != nil {
		return err
	}
	bare, err := engine.OpenBare(sess.Manifest(), sess.Path(), []inference.Tensor{input})
	if err != nil {
		return err
	}
	defer bare.Close()
	outputs, err := outputsFor(sess)
	if err != nil {
		return err
	}
	inputs := []inference.Tensor{input}
	shape := make([]string, len(pm.shape))
	for i, d := range pm.shape {
		shape[i] = fmt.Sprint(d)
	}
	peer, err := startPeer(ctx, node, script, o.PeerDir, sess.Path(), strings.Join(shape, ","), string(pm.dtype), threads)
	if err != nil {
		return err
	}
	defer peer.stop()
	for range 20 { // warm, as the peer has
		if err := sess.RunInto(ctx, inputs, outputs); err != nil {
			return err
		}
		if err := bare.Run(); err != nil {
			return err
		}
	}
	// Blocks of a few runs each, taken in turn, so that the machine's drift reaches all three.
	// Between blocks a pause lets the last block's intra-op threads stop spinning (ONNX Runtime
	// spins a while waiting for more work): otherwise at 2 threads on 2 cores each side runs
	// against the other's spinning threads.
	const block = 10
	settle := func() { time.Sleep(30 * time.Millisecond) }
	var vigilT, bareT, nodeT []time.Duration
	var vigilAll, bareAll, nodeAll time.Duration
	// The three take turns, in an order that rotates, so that none always follows another.
	sides := []struct {
		samples *[]time.Duration
		total   *time.Duration
		run     func() ([]time.Duration, error)
	}{
		{&vigilT, &vigilAll, func() ([]time.Duration, error) {
			d, _, err := timeEach(block, func() error { return sess.RunInto(ctx, inputs, outputs) })
			return d, err
		}},
		{&bareT, &bareAll, func() ([]time.Duration, error) { d, _, err := timeEach(block, bare.Run); return d, err }},
		{&nodeT, &nodeAll, func() ([]time.Duration, error) { return peer.run(block) }},
	}
	for round := range o.Rounds * runs / block {
		for k := range sides {
			side := sides[(k+round)%len(sides)]
			d, err := side.run()
			if err != nil {
				return err
			}
			for _, t := range d {
				*side.samples, *side.total = append(*side.samples, t), *side.total+t
			}
			settle()
		}
	}
	runtimeName := peer.runtime
	what := fmt.Sprintf("%s, %d intra-op thread(s)", pm.name, threads)
	vigil := row("peer", "Vigil session: "+what, 1, "run", vigilT, vigilAll)
	bareRow := row("peer", "bare onnxruntime_go session: "+what, 1, "run", bareT, bareAll)
	peerRow := row("peer", runtimeName+": "+what, 1, "run", nodeT, nodeAll)
	r.Rows = append(r.Rows, vigil, bareRow, peerRow)
	r.ratio("peer: Vigil / onnxruntime-node p50, "+what, vigil.P50/peerRow.P50, 1, true)
	return nil
}

// nodePeer is a running `node bench.js ... serve`.
type nodePeer struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	out     *bufio.Scanner
	runtime string
}

func startPeer(ctx context.Context, node, script, dir, model, shape, dtype string, threads int) (*nodePeer, error) {
	cmd := exec.CommandContext(ctx, node, script, model, shape, dtype, fmt.Sprint(threads), "serve")
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &nodePeer{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	p.out.Buffer(make([]byte, 1<<20), 1<<20)
	var ready struct {
		Ready   bool   `json:"ready"`
		Runtime string `json:"runtime"`
	}
	if err := p.read(&ready); err != nil || !ready.Ready {
		p.stop()
		return nil, fmt.Errorf("node %s did not start: %v", script, err)
	}
	p.runtime = ready.Runtime
	return p, nil
}

func (p *nodePeer) read(v any) error {
	if !p.out.Scan() {
		if err := p.out.Err(); err != nil {
			return err
		}
		return io.ErrUnexpectedEOF
	}
	return json.Unmarshal(p.out.Bytes(), v)
}

// run times n runs in the peer.
func (p *nodePeer) run(n int) ([]time.Duration, error) {
	if _, err := fmt.Fprintln(p.in, n); err != nil {
		return nil, err
	}
	var res struct {
		Times []float64 `json:"times_ms"`
	}
	if err := p.read(&res); err != nil {
		return nil, fmt.Errorf("node peer: %w", err)
	}
	out := make([]time.Duration, len(res.Times))
	for i, ms := range res.Times {
		out[i] = time.Duration(ms * 1e6)
	}
	return out, nil
}

func (p *nodePeer) stop() {
	p.in.Close()
	p.cmd.Wait()
}
