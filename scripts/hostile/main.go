// Command hostile runs the hostile inputs of docs/RELIABILITY.md against a real vigild, one
// after another, and prints a table: what each client got, whether the server was still
// serving, and its resident memory before and after. `make hostile` runs it.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/internal/hostile"
	"github.com/vigil-health/vigil/internal/testenv"
	"github.com/vigil-health/vigil/models"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
)

var servingLine = regexp.MustCompile(`msg="vigild serving" grpc=(\S+) http=(\S+)`)

type server struct {
	bin, dataDir, grpcAddr, httpAddr string
	cmd                              *exec.Cmd
	conn                             *grpc.ClientConn
}

func (s *server) token(role, name string) string {
	out, err := exec.Command(filepath.Join(s.bin, "vigil"), "token", "add", "--data-dir", s.dataDir, "--role", role, "--principal", name).Output()
	if err != nil {
		fail("token add %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

func as(token string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "hostile: "+format+"\n", args...)
	os.Exit(1)
}

func (s *server) rssMB() int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb >> 10
		}
	}
	return -1
}

func (s *server) serving() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(s.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING
}

func (s *server) metric(name string) float64 {
	resp, err := http.Get("http://" + s.httpAddr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	total := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			total += v
		}
	}
	return total
}

func (s *server) series(prefix string) int {
	resp, err := http.Get("http://" + s.httpAddr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, prefix) {
			n++
		}
	}
	return n
}

func code(err error) string { return status.Code(err).String() }

// upload sends a file to Imaging, naming the lesion model (a file no route takes is answered
// without its pixels being read).
func upload(ctx context.Context, conn *grpc.ClientConn, data []byte) (*vigilv1.AnalyzeInstanceResponse, error) {
	stream, err := vigilv1.NewImagingClient(conn).AnalyzeInstance(ctx)
	if err != nil {
		return nil, err
	}
	for i := 0; i < len(data); i += 64 << 10 {
		req := &vigilv1.AnalyzeInstanceRequest{Chunk: data[i:min(i+64<<10, len(data))]}
		if i == 0 {
			req.Options = &vigilv1.AnalyzeOptions{Model: "us-lesion-demo"}
		}
		if err := stream.Send(req); err != nil {
			break
		}
	}
	return stream.CloseAndRecv()
}

type probe struct {
	name string
	run  func(s *server) string
}

func main() {
	bin := "bin"
	if len(os.Args) > 1 {
		bin = os.Args[1]
	}
	dir, _ := os.MkdirTemp("", "vigil-hostile-")
	defer os.RemoveAll(dir)
	s := &server{bin: bin, dataDir: filepath.Join(dir, "data")}
	pacs, reviewer, bridgeTok := s.token("pacs-worker", "hostile-pacs"), s.token("reviewer", "hostile-reviewer"), s.token("ward-bridge", "hostile-bridge")
	other := s.token("pacs-worker", "other-pacs")
	mirror := os.Getenv("VIGIL_MODEL_MIRROR")
	if mirror == "" {
		mirror = filepath.Join(testenv.SharedDir(), "models")
	}
	s.cmd = exec.Command(filepath.Join(bin, "vigild"), "--data-dir", s.dataDir, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
		"--model-cache", filepath.Join(dir, "cache"), "--model-mirror", mirror+","+models.DefaultCacheDir(), "--stream-idle-timeout", "10s")
	stderr, _ := s.cmd.StderrPipe()
	if err := s.cmd.Start(); err != nil {
		fail("%v", err)
	}
	defer s.cmd.Process.Kill()
	ready := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := servingLine.FindStringSubmatch(sc.Text()); m != nil {
				ready <- m[1:]
			}
		}
	}()
	select {
	case a := <-ready:
		s.grpcAddr, s.httpAddr = a[0], a[1]
	case <-time.After(2 * time.Minute):
		fail("vigild did not start")
	}
	var err error
	s.conn, err = grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail("%v", err)
	}
	j2k, err := os.ReadFile(filepath.Join(testenv.SharedDir(), "dicom", "ultrasound", "us1-jpeg2000-lossless.dcm"))
	if err != nil {
		fail("%v", err)
	}
	phantom := func(seed uint64) ([]byte, string) {
		p := dicomio.MakePhantom(dicomio.PhantomSpec{Seed: seed, Rows: 240, Cols: 320, Frames: 4, Lesions: 1})
		data, err := dicomio.PhantomDICOM(&p)
		if err != nil {
			fail("%v", err)
		}
		return data, p.Truth.Study
	}
	frameJPEG := jpegOf(320, 240)

	probes := []probe{
		{"JPEG 2000 codestream claiming 30000 x 30000 (DICOM header 640 x 480), 153 KB", func(s *server) string {
			data := append([]byte(nil), j2k...)
			siz := bytes.Index(data, []byte{0xFF, 0x4F, 0xFF, 0x51}) + 8
			binary.BigEndian.PutUint32(data[siz:], 30000)
			binary.BigEndian.PutUint32(data[siz+4:], 30000)
			_, err := upload(as(pacs), s.conn, data)
			return code(err) + ": " + status.Convert(err).Message()
		}},
		{"1 MB of random bytes as a DICOM file", func(s *server) string {
			data := make([]byte, 1<<20)
			rng := rand.New(rand.NewPCG(1, 2))
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			_, err := upload(as(pacs), s.conn, data)
			return code(err)
		}},
		{"50 uploads that send 64 KB and then nothing (idle limit 10 s here)", func(s *server) string {
			data, _ := phantom(990001)
			before := s.metric("go_goroutines")
			var wg sync.WaitGroup
			codes := map[string]int{}
			var mu sync.Mutex
			for range 50 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					stream, err := vigilv1.NewImagingClient(s.conn).AnalyzeInstance(as(pacs))
					if err == nil {
						stream.Send(&vigilv1.AnalyzeInstanceRequest{Chunk: data[:64<<10]})
						var resp vigilv1.AnalyzeInstanceResponse
						err = stream.RecvMsg(&resp)
					}
					mu.Lock()
					codes[code(err)]++
					mu.Unlock()
				}()
			}
			wg.Wait()
			time.Sleep(2 * time.Second)
			return fmt.Sprintf("%v; goroutines %.0f before, %.0f after", codes, before, s.metric("go_goroutines"))
		}},
		{"40 Watch streams on one token", func(s *server) string {
			ctx, cancel := context.WithCancel(as(reviewer))
			defer cancel()
			codes := map[string]int{}
			for range 40 {
				stream, err := vigilv1.NewReviewClient(s.conn).Watch(ctx, &vigilv1.WatchRequest{})
				if err == nil {
					errc := make(chan error, 1)
					go func() { _, err := stream.Recv(); errc <- err }()
					select {
					case err = <-errc:
					case <-time.After(300 * time.Millisecond):
					}
				}
				codes[code(err)]++
			}
			return fmt.Sprint(codes)
		}},
		{"HTTP request body sent 1 byte every 5 s", func(s *server) string {
			conn, err := net.Dial("tcp", s.httpAddr)
			if err != nil {
				return err.Error()
			}
			defer conn.Close()
			start := time.Now()
			fmt.Fprintf(conn, "POST /api/v1/review/List HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 100\r\n\r\n{", reviewer)
			go func() {
				for range 10 {
					time.Sleep(5 * time.Second)
					if _, err := conn.Write([]byte(" ")); err != nil {
						return
					}
				}
			}()
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				return err.Error()
			}
			return fmt.Sprintf("HTTP %d after %s", resp.StatusCode, time.Since(start).Round(time.Second))
		}},
		{"200 new camera IDs, one frame each", func(s *server) string {
			before := s.series("vigil_ward_frames_total{")
			for i := range 200 {
				stream, err := vigilv1.NewWardClient(s.conn).StreamCamera(as(bridgeTok))
				if err != nil {
					return err.Error()
				}
				stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{CameraId: fmt.Sprintf("cam-%d", i), FrameRate: 10}}})
				stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: &vigilv1.Frame{Sequence: 1, Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, Data: frameJPEG}}})
				stream.CloseSend()
				for {
					if _, err := stream.Recv(); err != nil {
						break
					}
				}
			}
			return fmt.Sprintf("ward frame series %d before, %d after (64 cameras and \"other\", 3 outcomes each)", before, s.series("vigil_ward_frames_total{"))
		}},
		{"A camera sending 1500 frames with one capture time", func(s *server) string {
			stream, err := vigilv1.NewWardClient(s.conn).StreamCamera(as(bridgeTok))
			if err != nil {
				return err.Error()
			}
			stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{CameraId: "frozen-clock", FrameRate: 10,
				Policy: vigilv1.FramePolicy_FRAME_POLICY_EVERY_FRAME}}})
			go func() {
				for i := range 1500 {
					stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: &vigilv1.Frame{Sequence: int64(i + 1),
						CaptureTime: nil, Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, Data: frameJPEG}}})
				}
				stream.CloseSend()
			}()
			n := 0
			for {
				ev, err := stream.Recv()
				if err != nil {
					if errors.Is(err, io.EOF) {
						return fmt.Sprintf("OK: %d frame results", n)
					}
					return code(err)
				}
				if ev.GetFrameResult() != nil {
					n++
				}
			}
		}},
		{"Camera frame: PNG header claiming 20000 x 20000; a frame of 8 MB + 1 byte", func(s *server) string {
			stream, err := vigilv1.NewWardClient(s.conn).StreamCamera(as(bridgeTok))
			if err != nil {
				return err.Error()
			}
			stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{CameraId: "huge", FrameRate: 10,
				Policy: vigilv1.FramePolicy_FRAME_POLICY_EVERY_FRAME}}})
			stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: &vigilv1.Frame{Sequence: 1, Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_PNG, Data: hostile.HugePNG(20000)}}})
			stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: &vigilv1.Frame{Sequence: 2, Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, Data: make([]byte, 8<<20+1)}}})
			stream.CloseSend()
			var out []string
			for {
				ev, err := stream.Recv()
				if err != nil {
					break
				}
				if fe := ev.GetFrameError(); fe != nil {
					out = append(out, fe.Code)
				}
			}
			return "frame errors " + strings.Join(out, ", ") + "; the stream went on"
		}},
		{"Amendments of NaN mm and -1e300 furlong", func(s *server) string {
			data, _ := phantom(990002)
			resp, err := upload(as(pacs), s.conn, data)
			if err != nil || len(resp.Findings) == 0 {
				return "no finding to amend: " + fmt.Sprint(err)
			}
			f := resp.Findings[0]
			rc := vigilv1.NewReviewClient(s.conn)
			var got []string
			for _, m := range []*vigilv1.Measurement{{Name: "long axis", Value: math.NaN(), Unit: "mm"}, {Name: "long axis", Value: -1e300, Unit: "furlong"}} {
				_, err := rc.Decide(as(reviewer), &vigilv1.DecideRequest{Id: f.Id, Version: f.Version, Outcome: vigilv1.Outcome_OUTCOME_AMEND,
					ReasonCode: "measurement", Amendment: &vigilv1.Amendment{Measurements: []*vigilv1.Measurement{m}}})
				got = append(got, code(err))
			}
			return strings.Join(got, ", ")
		}},
		{"A PACS worker exporting another worker's study", func(s *server) string {
			data, study := phantom(990003)
			if _, err := upload(as(other), s.conn, data); err != nil {
				return err.Error()
			}
			_, err := vigilv1.NewReviewClient(s.conn).ExportReport(as(pacs), &vigilv1.ExportReportRequest{StudyInstanceUid: study})
			return code(err)
		}},
		{"A revoked token's open Watch", func(s *server) string {
			tok := s.token("reviewer", "soon-revoked")
			stream, err := vigilv1.NewReviewClient(s.conn).Watch(as(tok), &vigilv1.WatchRequest{})
			if err != nil {
				return err.Error()
			}
			time.Sleep(300 * time.Millisecond)
			start := time.Now()
			exec.Command(filepath.Join(s.bin, "vigil"), "token", "revoke", "--data-dir", s.dataDir, "--principal", "soon-revoked").Run()
			for {
				if _, err := stream.Recv(); err != nil {
					return fmt.Sprintf("%s after %s", code(err), time.Since(start).Round(100*time.Millisecond))
				}
			}
		}},
		{"A Study Instance UID that is a path, /../../victim/secret", func(s *server) string {
			p := dicomio.MakePhantom(dicomio.PhantomSpec{Seed: 990101, Rows: 240, Cols: 320, Frames: 1, Lesions: 1})
			u := dicomio.GreyUltrasound{Width: 320, Height: 240, Frames: p.Frames, StudyInstanceUID: "/../../victim/secret"}
			data, _ := dicomio.UltrasoundDICOM(&u)
			_, err := upload(as(pacs), s.conn, data)
			return code(err) + ": " + status.Convert(err).Message()
		}},
		{"A second PACS worker replaying the first 3000 bytes of the first one's instance", func(s *server) string {
			data, _ := phantom(990102)
			if _, err := upload(as(pacs), s.conn, data); err != nil {
				return "the first upload: " + err.Error()
			}
			resp, err := upload(as(other), s.conn, data[:3000])
			return fmt.Sprintf("%s, %d findings back", code(err), len(resp.GetFindings()))
		}},
		{"An instance naming another Patient ID under an existing study", func(s *server) string {
			p := dicomio.MakePhantom(dicomio.PhantomSpec{Seed: 990103, Rows: 240, Cols: 320, Frames: 1, Lesions: 1})
			study := dicomio.NewUID()
			for i, id := range []string{"HOSTILE-1", "HOSTILE-2"} {
				u := dicomio.GreyUltrasound{Width: 320, Height: 240, Frames: p.Frames, StudyInstanceUID: study, Patient: dicomio.Patient{ID: id},
					StudyDescription: "Vigil synthetic phantom"}
				data, _ := dicomio.UltrasoundDICOM(&u)
				if _, err := upload(as(pacs), s.conn, data); i == 1 || err != nil {
					return code(err)
				}
			}
			return ""
		}},
		{"Eleven 60,000-byte patient and study fields, then the reviewer's list", func(s *server) string {
			p := dicomio.MakePhantom(dicomio.PhantomSpec{Seed: 990104, Rows: 240, Cols: 320, Frames: 1, Lesions: 1})
			huge := strings.Repeat("x", 60000)
			u := dicomio.GreyUltrasound{Width: 320, Height: 240, Frames: p.Frames, StudyDescription: huge, SeriesDescription: "Vigil synthetic phantom",
				Patient: dicomio.Patient{Name: huge, ID: huge, BirthDate: huge, Sex: huge},
				Study:   dicomio.Study{AccessionNumber: huge, Date: huge, Time: huge, ReferringPhysician: huge, ID: huge}}
			data, _ := dicomio.UltrasoundDICOM(&u)
			_, err := upload(as(pacs), s.conn, data)
			list, lerr := vigilv1.NewReviewClient(s.conn).List(as(reviewer), &vigilv1.ListRequest{PageSize: 500})
			return fmt.Sprintf("%s; the list: %s, %d findings, %d KB", code(err), code(lerr), len(list.GetFindings()), proto.Size(list)/1024)
		}},
		{"PhysicalDeltaX = 1e-250 cm", func(s *server) string {
			p := dicomio.MakePhantom(dicomio.PhantomSpec{Seed: 990105, Rows: 240, Cols: 320, Frames: 1, Lesions: 1})
			u := dicomio.GreyUltrasound{Width: 320, Height: 240, Frames: p.Frames, MMPerPixel: 1e-249, StudyDescription: "Vigil synthetic phantom"}
			data, _ := dicomio.UltrasoundDICOM(&u)
			resp, err := upload(as(pacs), s.conn, data)
			return fmt.Sprintf("%s, %d findings, notes %q", code(err), len(resp.GetFindings()), resp.GetNotes())
		}},
		{"256 health Watch streams without a credential, then an upload (issue 29.1)", func(s *server) string {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			codes := map[string]int{}
			for range 256 {
				stream, err := healthpb.NewHealthClient(s.conn).Watch(ctx, &healthpb.HealthCheckRequest{})
				if err == nil {
					_, err = stream.Recv()
				}
				codes[code(err)]++
			}
			data, _ := phantom(990201)
			_, err := upload(as(pacs), s.conn, data)
			return fmt.Sprintf("watches: %v; the upload beside them: %s", codes, code(err))
		}},
		{"2000 idle HTTP connections (issue 29.2)", func(s *server) string {
			var conns []net.Conn
			for range 2000 {
				c, err := net.Dial("tcp", s.httpAddr)
				if err != nil {
					break
				}
				conns = append(conns, c)
			}
			time.Sleep(time.Second)
			open := 0
			for _, c := range conns {
				c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
				if _, err := c.Read(make([]byte, 1)); isTimeout(err) {
					open++
				}
			}
			healthy := s.serving()
			for _, c := range conns {
				c.Close()
			}
			return fmt.Sprintf("%d connected, %d held open by the server (--max-connections), the rest closed; gRPC health meanwhile: serving %v", len(conns), open, healthy)
		}},
		{"8 camera streams, each 3 PNGs of 25 KB that decode to 4096 x 4096 (issue 29.3)", func(s *server) string {
			png := hostile.FlatPNG(4096)
			var wg sync.WaitGroup
			var mu sync.Mutex
			outcomes := map[string]int{}
			for cam := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					stream, err := vigilv1.NewWardClient(s.conn).StreamCamera(as(bridgeTok))
					if err != nil {
						return
					}
					stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{
						CameraId: fmt.Sprintf("hostile-4k-%d", cam), FrameRate: 5, Policy: vigilv1.FramePolicy_FRAME_POLICY_EVERY_FRAME}}})
					for i := range 3 {
						stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: &vigilv1.Frame{Sequence: int64(i + 1),
							Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_PNG, Data: png}}})
					}
					stream.CloseSend()
					for {
						ev, err := stream.Recv()
						if err != nil {
							return
						}
						mu.Lock()
						if fe := ev.GetFrameError(); fe != nil {
							outcomes[fe.Code]++
						} else if ev.GetFrameResult() != nil {
							outcomes["result"]++
						}
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			return fmt.Sprintf("frames: %v (decoded frames bounded by --max-frame-memory, 512 MiB)", outcomes)
		}},
		{"20 parallel uploads of one SOP Instance UID (issue 29.5)", func(s *server) string {
			data, _ := phantom(990202)
			start := time.Now()
			var wg sync.WaitGroup
			var mu sync.Mutex
			fresh, failed := 0, 0
			for range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := upload(as(pacs), s.conn, data)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err != nil:
						failed++
					case !resp.AlreadyAnalyzed:
						fresh++
					}
				}()
			}
			wg.Wait()
			return fmt.Sprintf("%d analysed, %d given the stored result, %d failed, in %.2f s", fresh, 20-fresh-failed, failed, time.Since(start).Seconds())
		}},
		{"Non-ASCII Authorization header over HTTP", func(s *server) string {
			req, _ := http.NewRequest("POST", "http://"+s.httpAddr+"/api/v1/review/List", strings.NewReader("{}"))
			req.Header.Set("Authorization", "Bearer t\xc3\xb6ken")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err.Error()
			}
			resp.Body.Close()
			return fmt.Sprintf("HTTP %d", resp.StatusCode)
		}},
	}
	fmt.Println("| Hostile input | What the client got | Serving after | RSS before → after (MB) |")
	fmt.Println("|---|---|---|---|")
	for _, p := range probes {
		before := s.rssMB()
		got := p.run(s)
		time.Sleep(time.Second)
		fmt.Printf("| %s | %s | %v | %d → %d |\n", p.name, got, s.serving(), before, s.rssMB())
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// jpegOf is a plain grey JPEG frame, with a gradient.
func jpegOf(w, h int) []byte {
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = byte(i % 251)
	}
	var buf bytes.Buffer
	jpeg.Encode(&buf, img, &jpeg.Options{Quality: 80})
	return buf.Bytes()
}
