package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
)

// findingJSON is one finding in `vigil review ... --json` (docs/cli.md): add fields, never
// rename or remove them.
type findingJSON struct {
	ID             string            `json:"id"`
	Pipeline       string            `json:"pipeline"`
	Label          string            `json:"label"`
	Score          float32           `json:"score"`
	Priority       int32             `json:"priority"`
	State          string            `json:"state"`
	Version        int64             `json:"version"`
	Box            *boxJSON          `json:"box"`
	Measurements   []measurementJSON `json:"measurements"`
	Frames         framesJSON        `json:"frames"`
	Model          modelRefJSON      `json:"model"`
	Source         sourceJSON        `json:"source"`
	CreatedAt      string            `json:"created_at"`
	UpdatedAt      string            `json:"updated_at"`
	ClaimedBy      string            `json:"claimed_by"`
	LeaseExpiresAt string            `json:"lease_expires_at"`
	Decision       *decisionJSON     `json:"decision"`
	Evidence       []string          `json:"evidence,omitempty"`
	// Patient and Study are shown to reviewers and admins only (docs/cli.md).
	Patient *patientJSON `json:"patient,omitempty"`
	Study   *studyJSON   `json:"study,omitempty"`
}

type patientJSON struct {
	Name      string `json:"name"`
	ID        string `json:"id"`
	BirthDate string `json:"birth_date,omitempty"`
	Sex       string `json:"sex,omitempty"`
}

type studyJSON struct {
	AccessionNumber    string `json:"accession_number"`
	Description        string `json:"description"`
	Date               string `json:"date"`
	Time               string `json:"time,omitempty"`
	ReferringPhysician string `json:"referring_physician,omitempty"`
	ID                 string `json:"id,omitempty"`
	SeriesDescription  string `json:"series_description,omitempty"`
}

type boxJSON struct {
	X      float32 `json:"x"`
	Y      float32 `json:"y"`
	Width  float32 `json:"width"`
	Height float32 `json:"height"`
}

type measurementJSON struct {
	Name       string  `json:"name"`
	Value      float64 `json:"value"`
	Unit       string  `json:"unit"`
	LowQuality bool    `json:"low_quality,omitempty"`
	Quality    string  `json:"quality,omitempty"`
}

type framesJSON struct {
	First int32 `json:"first"`
	Last  int32 `json:"last"`
	Best  int32 `json:"best"`
}

type modelRefJSON struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	SHA256  string `json:"sha256"`
}

type sourceJSON struct {
	StudyInstanceUID  string  `json:"study_instance_uid,omitempty"`
	SeriesInstanceUID string  `json:"series_instance_uid,omitempty"`
	SOPInstanceUID    string  `json:"sop_instance_uid,omitempty"`
	Modality          string  `json:"modality,omitempty"`
	Frames            []int32 `json:"frames,omitempty"`
	CameraID          string  `json:"camera_id,omitempty"`
	TrackID           int64   `json:"track_id,omitempty"`
	FirstSequence     int64   `json:"first_sequence,omitempty"`
	LastSequence      int64   `json:"last_sequence,omitempty"`
	StartTime         string  `json:"start_time,omitempty"`
	EndTime           string  `json:"end_time,omitempty"`
}

type decisionJSON struct {
	Outcome    string         `json:"outcome"`
	ReasonCode string         `json:"reason_code"`
	Comment    string         `json:"comment"`
	Reviewer   string         `json:"reviewer"`
	DecidedAt  string         `json:"decided_at"`
	Amendment  *amendmentJSON `json:"amendment"`
}

type amendmentJSON struct {
	Label        string            `json:"label,omitempty"`
	Box          *boxJSON          `json:"box,omitempty"`
	Measurements []measurementJSON `json:"measurements,omitempty"`
}

type auditJSON struct {
	Sequence int64  `json:"sequence"`
	Actor    string `json:"actor"`
	Action   string `json:"action"`
	Time     string `json:"time"`
	State    string `json:"state"`
	Version  int64  `json:"version"`
}

func enumName(s fmt.Stringer, prefix string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(s.String(), prefix)), "_", "-")
}

func timeText(t interface{ AsTime() time.Time }, valid bool) string {
	if !valid {
		return ""
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

func boxOf(b *vigilv1.Box) *boxJSON {
	if b == nil {
		return nil
	}
	return &boxJSON{b.X, b.Y, b.Width, b.Height}
}

func measurementsOf(ms []*vigilv1.Measurement) []measurementJSON {
	out := []measurementJSON{}
	for _, m := range ms {
		out = append(out, measurementJSON{m.Name, m.Value, m.Unit, m.LowQuality, m.Quality})
	}
	return out
}

func findingOf(f *vigilv1.Finding) findingJSON {
	out := findingJSON{
		ID: f.Id, Pipeline: enumName(f.Pipeline, "PIPELINE_"), Label: f.Label, Score: f.Score, Priority: f.Priority,
		State: enumName(f.State, "FINDING_STATE_"), Version: f.Version, Box: boxOf(f.Box),
		Measurements: measurementsOf(f.Measurements),
		Frames:       framesJSON{f.FirstFrame, f.LastFrame, f.BestFrame},
		CreatedAt:    timeText(f.CreatedAt, f.CreatedAt != nil), UpdatedAt: timeText(f.UpdatedAt, f.UpdatedAt != nil),
		ClaimedBy: f.ClaimedBy, LeaseExpiresAt: timeText(f.LeaseExpiresAt, f.LeaseExpiresAt != nil),
		Evidence: f.Evidence,
	}
	if m := f.Model; m != nil {
		out.Model = modelRefJSON{m.Name, m.Version, m.Sha256}
	}
	if d := f.GetDicom(); d != nil {
		out.Source = sourceJSON{StudyInstanceUID: d.StudyInstanceUid, SeriesInstanceUID: d.SeriesInstanceUid,
			SOPInstanceUID: d.SopInstanceUid, Modality: d.Modality, Frames: d.Frames}
	}
	if c := f.GetCamera(); c != nil {
		out.Source = sourceJSON{CameraID: c.CameraId, TrackID: c.TrackId, FirstSequence: c.FirstSequence, LastSequence: c.LastSequence,
			StartTime: timeText(c.StartTime, c.StartTime != nil), EndTime: timeText(c.EndTime, c.EndTime != nil)}
	}
	if c := f.Context; c != nil {
		out.Patient = &patientJSON{Name: c.PatientName, ID: c.PatientId, BirthDate: c.PatientBirthDate, Sex: c.PatientSex}
		out.Study = &studyJSON{AccessionNumber: c.AccessionNumber, Description: c.StudyDescription, Date: c.StudyDate, Time: c.StudyTime,
			ReferringPhysician: c.ReferringPhysician, ID: c.StudyId, SeriesDescription: c.SeriesDescription}
	}
	if d := f.Decision; d != nil {
		out.Decision = &decisionJSON{Outcome: enumName(d.Outcome, "OUTCOME_"), ReasonCode: d.ReasonCode, Comment: d.Comment,
			Reviewer: d.Reviewer, DecidedAt: timeText(d.DecidedAt, d.DecidedAt != nil)}
		if a := d.Amendment; a != nil {
			out.Decision.Amendment = &amendmentJSON{Label: a.Label, Box: boxOf(a.Box), Measurements: measurementsOf(a.Measurements)}
		}
	}
	return out
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// filterFlags are the worklist filters shared by list, claim and counts.
type filterFlags struct {
	states, pipeline, modality, camera, model, study string
}

func (f *filterFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.states, "state", "", "states, comma separated: pending, claimed, accepted, rejected, amended")
	fs.StringVar(&f.pipeline, "pipeline", "", "triage, fall, gait or fall-risk")
	fs.StringVar(&f.modality, "modality", "", "DICOM modality, such as US")
	fs.StringVar(&f.camera, "camera", "", "camera ID")
	fs.StringVar(&f.model, "model", "", "model name")
	fs.StringVar(&f.study, "study", "", "Study Instance UID")
}

func (f *filterFlags) proto() (*vigilv1.Filter, error) {
	p := &vigilv1.Filter{Modality: f.modality, CameraId: f.camera, Model: f.model, StudyInstanceUid: f.study}
	if f.pipeline != "" {
		v, ok := vigilv1.Pipeline_value["PIPELINE_"+strings.ToUpper(strings.ReplaceAll(f.pipeline, "-", "_"))]
		if !ok {
			return nil, usageError{fmt.Sprintf("--pipeline %q is not triage, fall, gait or fall-risk", f.pipeline)}
		}
		p.Pipeline = vigilv1.Pipeline(v)
	}
	for _, s := range strings.Split(f.states, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		v, ok := vigilv1.FindingState_value["FINDING_STATE_"+strings.ToUpper(s)]
		if !ok {
			return nil, usageError{fmt.Sprintf("--state %q is not pending, claimed, accepted, rejected or amended", s)}
		}
		p.States = append(p.States, vigilv1.FindingState(v))
	}
	return p, nil
}

var reviewUsage = `usage: vigil review COMMAND [flags]
  list     [filters] [--limit N] [--json]         the worklist, most urgent first
  show     ID [--overlay FILE] [--json]           one finding with its audit trail
  claim    [filters] [--lease 10m] [--json]       lease the most urgent pending finding
  accept   ID [--reason CODE] [--comment TEXT] [--version N] [--json]
  reject   ID --reason CODE [--comment TEXT] [--version N] [--json]
  amend    ID --reason CODE [--label L] [--box X,Y,W,H] [--measure NAME=VALUE[UNIT]]... [--version N] [--json]
  release  ID [--version N] [--json]
  counts   [filters] [--json]
  export   --study UID --out FILE                 the DICOM SR of a study's decided findings
Without --version, accept, reject, amend and release act on the version the server has now.`

func runReview(g *globals, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{reviewUsage}
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("review "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	g.register(fs)
	asJSON := fs.Bool("json", false, "print JSON (docs/cli.md)")
	var filter filterFlags
	var (
		limit            *int
		lease            *time.Duration
		reason, comment  *string
		version          *int64
		label, box, over *string
		study, out       *string
		measures         multiFlag
	)
	switch sub {
	case "list", "claim", "counts":
		filter.register(fs)
		limit = fs.Int("limit", 50, "findings per page (list)")
		lease = fs.Duration("lease", 0, "how long the claim lasts (claim; default the server's, 10m)")
	case "show":
		over = fs.String("overlay", "", "write the overlay image to this file")
	case "accept", "reject", "amend", "release":
		version = fs.Int64("version", 0, "the version the decision is made on (default: the current one)")
		if sub != "release" {
			reason = fs.String("reason", "", "reason code: confirmed, false-positive, artefact, wrong-label, wrong-size, wrong-location, duplicate, not-clinically-relevant, other")
			comment = fs.String("comment", "", "free text")
		}
		if sub == "amend" {
			label = fs.String("label", "", "corrected label")
			box = fs.String("box", "", "corrected box: x,y,width,height in image pixels")
			fs.Var(&measures, "measure", "corrected measurement NAME=VALUE UNIT, such as 'long axis=9.5mm' (repeatable)")
		}
	case "export":
		study = fs.String("study", "", "Study Instance UID")
		out = fs.String("out", "", "file to write the DICOM SR to")
	default:
		return usageError{fmt.Sprintf("unknown review command %q\n%s", sub, reviewUsage)}
	}
	// Flags may come before or after the finding ID.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	needsID := sub == "show" || sub == "accept" || sub == "reject" || sub == "amend" || sub == "release"
	if needsID && len(positional) != 1 || !needsID && len(positional) != 0 {
		return usageError{reviewUsage}
	}

	conn, ctx, done, err := g.connect()
	if err != nil {
		return err
	}
	defer done()
	rc := vigilv1.NewReviewClient(conn)

	switch sub {
	case "list":
		f, err := filter.proto()
		if err != nil {
			return err
		}
		resp, err := rc.List(ctx, &vigilv1.ListRequest{Filter: f, PageSize: int32(*limit)})
		if err != nil {
			return err
		}
		list := []findingJSON{}
		for _, f := range resp.Findings {
			list = append(list, findingOf(f))
		}
		if *asJSON {
			return printJSON(stdout, map[string]any{"findings": list, "next_page_token": resp.NextPageToken})
		}
		printTable(stdout, list)
		return nil
	case "show":
		resp, err := rc.Get(ctx, &vigilv1.GetRequest{Id: positional[0]})
		if err != nil {
			return err
		}
		if *over != "" {
			if resp.Finding.Overlay == nil {
				return fmt.Errorf("finding %s has no overlay image", positional[0])
			}
			if err := os.WriteFile(*over, resp.Finding.Overlay.Data, 0o600); err != nil {
				return err
			}
		}
		var trail []auditJSON
		for _, a := range resp.Audit {
			trail = append(trail, auditJSON{a.Sequence, a.Actor, a.Action, timeText(a.Time, a.Time != nil),
				enumName(a.After.State, "FINDING_STATE_"), a.After.Version})
		}
		f := findingOf(resp.Finding)
		if *asJSON {
			return printJSON(stdout, map[string]any{"finding": f, "audit": trail})
		}
		printFinding(stdout, f)
		fmt.Fprintln(stdout, "\naudit:")
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		for _, a := range trail {
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\tv%d\t%s\n", a.Sequence, a.Time, tt(a.Actor), tt(a.Action), a.Version, a.State)
		}
		return tw.Flush()
	case "claim":
		f, err := filter.proto()
		if err != nil {
			return err
		}
		resp, err := rc.ClaimNext(ctx, &vigilv1.ClaimNextRequest{Filter: f, LeaseSeconds: int32(lease.Seconds())})
		if err != nil {
			return err
		}
		if resp.Finding == nil {
			if *asJSON {
				return printJSON(stdout, map[string]any{"finding": nil})
			}
			fmt.Fprintln(stdout, "nothing is waiting")
			return nil
		}
		return printOne(stdout, *asJSON, resp.Finding)
	case "accept", "reject", "amend":
		outcome := map[string]vigilv1.Outcome{"accept": vigilv1.Outcome_OUTCOME_ACCEPT, "reject": vigilv1.Outcome_OUTCOME_REJECT, "amend": vigilv1.Outcome_OUTCOME_AMEND}[sub]
		req := &vigilv1.DecideRequest{Id: positional[0], Outcome: outcome, ReasonCode: *reason, Comment: *comment}
		if sub == "amend" {
			a, err := amendment(*label, *box, measures)
			if err != nil {
				return err
			}
			req.Amendment = a
		}
		if req.Version, err = currentVersion(ctx, rc, positional[0], *version); err != nil {
			return err
		}
		resp, err := rc.Decide(ctx, req)
		if err != nil {
			return err
		}
		return printOne(stdout, *asJSON, resp.Finding)
	case "release":
		v, err := currentVersion(ctx, rc, positional[0], *version)
		if err != nil {
			return err
		}
		resp, err := rc.Release(ctx, &vigilv1.ReleaseRequest{Id: positional[0], Version: v})
		if err != nil {
			return err
		}
		return printOne(stdout, *asJSON, resp.Finding)
	case "counts":
		f, err := filter.proto()
		if err != nil {
			return err
		}
		resp, err := rc.Counts(ctx, &vigilv1.CountsRequest{Filter: f})
		if err != nil {
			return err
		}
		states := map[string]int64{}
		for _, s := range resp.States {
			states[enumName(s.State, "FINDING_STATE_")] = s.Count
		}
		type modelCount struct {
			Model          modelRefJSON `json:"model"`
			Accepted       int64        `json:"accepted"`
			Amended        int64        `json:"amended"`
			Rejected       int64        `json:"rejected"`
			AcceptanceRate float64      `json:"acceptance_rate"`
		}
		models := []modelCount{}
		for _, m := range resp.Models {
			models = append(models, modelCount{modelRefJSON{m.Model.Name, m.Model.Version, m.Model.Sha256}, m.Accepted, m.Amended, m.Rejected, m.AcceptanceRate})
		}
		if *asJSON {
			return printJSON(stdout, map[string]any{"states": states, "models": models})
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PENDING\tCLAIMED\tACCEPTED\tAMENDED\tREJECTED")
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\n\n", states["pending"], states["claimed"], states["accepted"], states["amended"], states["rejected"])
		fmt.Fprintln(tw, "MODEL\tVERSION\tACCEPTED\tAMENDED\tREJECTED\tACCEPTANCE")
		for _, m := range models {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%.0f%%\n", tt(m.Model.Name), tt(m.Model.Version), m.Accepted, m.Amended, m.Rejected, 100*m.AcceptanceRate)
		}
		return tw.Flush()
	case "export":
		if *study == "" || *out == "" {
			return usageError{"export needs --study and --out"}
		}
		resp, err := rc.ExportReport(ctx, &vigilv1.ExportReportRequest{StudyInstanceUid: *study})
		if err != nil {
			return err
		}
		if err := os.WriteFile(*out, resp.Report, 0o600); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s: SR %s with %d findings\n", *out, resp.SopInstanceUid, resp.FindingsIncluded)
		return nil
	}
	return nil
}

// currentVersion is the given version, or the finding's version on the server now.
func currentVersion(ctx context.Context, rc vigilv1.ReviewClient, id string, given int64) (int64, error) {
	if given > 0 {
		return given, nil
	}
	resp, err := rc.Get(ctx, &vigilv1.GetRequest{Id: id})
	if err != nil {
		return 0, err
	}
	return resp.Finding.Version, nil
}

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, "; ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func amendment(label, box string, measures []string) (*vigilv1.Amendment, error) {
	a := &vigilv1.Amendment{Label: label}
	if box != "" {
		parts := strings.Split(box, ",")
		var v [4]float64
		if len(parts) != 4 {
			return nil, usageError{"--box takes x,y,width,height"}
		}
		for i, p := range parts {
			f, err := strconv.ParseFloat(strings.TrimSpace(p), 32)
			if err != nil {
				return nil, usageError{fmt.Sprintf("--box: %q is not a number", p)}
			}
			v[i] = f
		}
		a.Box = &vigilv1.Box{X: float32(v[0]), Y: float32(v[1]), Width: float32(v[2]), Height: float32(v[3])}
	}
	for _, m := range measures {
		name, rest, ok := strings.Cut(m, "=")
		rest = strings.TrimSpace(rest)
		i := strings.IndexFunc(rest, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.' || r == '-') })
		if !ok || i <= 0 {
			return nil, usageError{fmt.Sprintf("--measure %q is not NAME=VALUE UNIT, such as 'long axis=9.5mm'", m)}
		}
		value, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil {
			return nil, usageError{fmt.Sprintf("--measure %q: %q is not a number", m, rest[:i])}
		}
		a.Measurements = append(a.Measurements, &vigilv1.Measurement{Name: strings.TrimSpace(name), Value: value, Unit: strings.TrimSpace(rest[i:])})
	}
	if a.Label == "" && a.Box == nil && len(a.Measurements) == 0 {
		return nil, usageError{"amend needs --label, --box or --measure"}
	}
	return a, nil
}

func printOne(w io.Writer, asJSON bool, f *vigilv1.Finding) error {
	j := findingOf(f)
	if asJSON {
		return printJSON(w, map[string]any{"finding": j})
	}
	printFinding(w, j)
	return nil
}

func printTable(w io.Writer, list []findingJSON) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPRI\tSTATE\tPIPELINE\tLABEL\tSCORE\tMODEL\tSOURCE\tCREATED")
	for _, f := range list {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%.2f\t%s@%s\t%s\t%s\n", tt(f.ID), f.Priority, f.State, f.Pipeline, tt(f.Label), f.Score,
			tt(f.Model.Name), tt(f.Model.Version), sourceText(f.Source), f.CreatedAt)
	}
	tw.Flush()
	if len(list) == 0 {
		fmt.Fprintln(w, "(no findings)")
	}
}

func sourceText(s sourceJSON) string {
	if s.CameraID != "" {
		return fmt.Sprintf("camera %s track %d frames %d-%d", tt(s.CameraID), s.TrackID, s.FirstSequence, s.LastSequence)
	}
	return fmt.Sprintf("%s %s", tt(s.Modality), tt(s.SOPInstanceUID))
}

// printFinding prints a finding for a person; every value that came from outside goes
// through tt, so a header or a comment cannot drive the reviewer's terminal.
func printFinding(w io.Writer, f findingJSON) {
	fmt.Fprintf(w, "%s  %s  priority %d  %s v%d\n", tt(f.ID), tt(f.Label), f.Priority, f.State, f.Version)
	// A ward finding's score is a heuristic of the rules on the keypoint model's skeletons.
	kind := "model score"
	if f.Pipeline != "triage" {
		kind = "heuristic score"
	}
	fmt.Fprintf(w, "  %s %.2f by %s %s\n  source %s\n", kind, f.Score, tt(f.Model.Name), tt(f.Model.Version), sourceText(f.Source))
	if p, st := f.Patient, f.Study; p != nil {
		fmt.Fprintf(w, "  patient %s (ID %s, born %s, sex %s)\n  study %s, accession %s, %s\n", tt(p.Name), tt(p.ID), tt(p.BirthDate), tt(p.Sex),
			tt(st.Date), tt(st.AccessionNumber), tt(st.Description))
	}
	if f.Box != nil {
		fmt.Fprintf(w, "  box x=%.0f y=%.0f w=%.0f h=%.0f\n", f.Box.X, f.Box.Y, f.Box.Width, f.Box.Height)
	}
	for _, m := range f.Measurements {
		fmt.Fprintf(w, "  %s %g %s\n", tt(m.Name), m.Value, tt(m.Unit))
	}
	for _, e := range f.Evidence {
		fmt.Fprintf(w, "  - %s\n", tt(e))
	}
	if f.ClaimedBy != "" {
		fmt.Fprintf(w, "  claimed by %s until %s\n", tt(f.ClaimedBy), f.LeaseExpiresAt)
	}
	if d := f.Decision; d != nil {
		fmt.Fprintf(w, "  %s by %s at %s (%s) %s\n", d.Outcome, tt(d.Reviewer), d.DecidedAt, tt(d.ReasonCode), tt(d.Comment))
	}
}
