// Package pacs connects a PACS to Vigil: it watches the archive for new instances, sends the
// ones a model's routes take to Imaging.AnalyzeInstance, follows their findings through review,
// and stores the study's structured report back into the archive once they are all decided.
package pacs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Instance is an archived instance, as the worker needs to pick and fetch it.
type Instance struct {
	// Ref is how the archive names it: Orthanc's instance ID, or a DICOMweb instance path.
	Ref                                                      string
	SOPInstanceUID, SOPClassUID, StudyInstanceUID, SeriesUID string
	Modality, BodyPart, StudyDescription, SeriesDescription  string
}

// Source is an archive the worker watches.
type Source interface {
	// Changes returns the instances stored after cursor (empty: from the start), up to a
	// page, the cursor to pass next, and whether more are waiting.
	Changes(ctx context.Context, cursor string) (insts []Instance, next string, more bool, err error)
	// Retrieve returns an instance's DICOM file.
	Retrieve(ctx context.Context, inst Instance) (io.ReadCloser, error)
	// Store sends a DICOM file into the archive with STOW-RS.
	Store(ctx context.Context, data []byte) error
}

// ErrArchive is an archive's refusal or failure; the message says which call and what came
// back.
var ErrArchive = errors.New("pacs: archive")

type httpArchive struct {
	base   string
	client *http.Client
	// user and password, when user is set, go with every request as HTTP basic auth.
	user, password string
}

// MaxAnswer bounds an archive's JSON answer (a page of changes, a QIDO-RS page, an instance's
// tags): a larger one is refused, not read into memory.
const MaxAnswer = 8 << 20

// NewHTTPClient is the client the worker talks to an archive with: a timeout on every call,
// and redirects followed only within the origin they started from (scheme, host and port), so
// that an archive cannot send the worker, and its credentials, elsewhere.
func NewHTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		first := via[0].URL
		if req.URL.Scheme != first.Scheme || req.URL.Host != first.Host {
			return fmt.Errorf("%w: refused a redirect from %s to another origin, %s://%s", ErrArchive, first.Host, req.URL.Scheme, req.URL.Host)
		}
		if len(via) >= 5 {
			return fmt.Errorf("%w: more than 5 redirects", ErrArchive)
		}
		return nil
	}}
}

// SetCredentials makes every request carry HTTP basic auth.
func (a *httpArchive) SetCredentials(user, password string) { a.user, a.password = user, password }

func (a *httpArchive) get(ctx context.Context, path string, accept string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", a.base+path, nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if a.user != "" {
		req.SetBasicAuth(a.user, a.password)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: GET %s: %v", ErrArchive, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("%w: GET %s: %s: %s", ErrArchive, path, resp.Status, strings.TrimSpace(string(body)))
	}
	return resp, nil
}

func (a *httpArchive) getJSON(ctx context.Context, path string, out any) error {
	resp, err := a.get(ctx, path, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.ContentLength > MaxAnswer {
		return fmt.Errorf("%w: GET %s: an answer of %d bytes is over the worker's limit of %d", ErrArchive, path, resp.ContentLength, MaxAnswer)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswer+1))
	if err != nil {
		return fmt.Errorf("%w: GET %s: %v", ErrArchive, path, err)
	}
	if len(body) > MaxAnswer {
		return fmt.Errorf("%w: GET %s: the answer is over the worker's limit of %d bytes", ErrArchive, path, MaxAnswer)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%w: GET %s: %v", ErrArchive, path, err)
	}
	return nil
}

// stow posts one DICOM file to a STOW-RS endpoint as multipart/related.
func (a *httpArchive) stow(ctx context.Context, path string, data []byte) error {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	part, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/dicom"}})
	if err != nil {
		return err
	}
	part.Write(data)
	mw.Close()
	req, err := http.NewRequestWithContext(ctx, "POST", a.base+path, &body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", `multipart/related; type="application/dicom"; boundary=`+mw.Boundary())
	req.Header.Set("Accept", "application/dicom+json")
	if a.user != "" {
		req.SetBasicAuth(a.user, a.password)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: STOW-RS %s: %v", ErrArchive, path, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("%w: STOW-RS %s: %s: %s", ErrArchive, path, resp.Status, strings.TrimSpace(string(msg)))
	}
	// A stored instance is listed under ReferencedSOPSequence (0008,1199); a failure under
	// FailedSOPSequence (0008,1198).
	var result map[string]struct{ Value []any }
	if json.Unmarshal(msg, &result) == nil && len(result["00081198"].Value) > 0 {
		return fmt.Errorf("%w: STOW-RS %s refused the instance (FailedSOPSequence)", ErrArchive, path)
	}
	return nil
}

// Orthanc is an Orthanc server: its /changes feed, its REST API for files, and its DICOMweb
// plugin for STOW-RS.
type Orthanc struct {
	httpArchive
	// DICOMwebRoot is the plugin's root (default /dicom-web).
	DICOMwebRoot string
}

// NewOrthanc is an Orthanc at base (http://host:port).
func NewOrthanc(base string, client *http.Client) *Orthanc {
	return &Orthanc{httpArchive: httpArchive{base: strings.TrimRight(base, "/"), client: client}, DICOMwebRoot: "/dicom-web"}
}

// Changes reads Orthanc's change log: its NewInstance entries, after the change numbered cursor.
func (o *Orthanc) Changes(ctx context.Context, cursor string) ([]Instance, string, bool, error) {
	since := 0
	if cursor != "" {
		n, err := strconv.Atoi(cursor)
		if err != nil {
			return nil, cursor, false, fmt.Errorf("pacs: Orthanc cursor %q is not a change number", cursor)
		}
		since = n
	}
	var page struct {
		Changes []struct {
			ChangeType, ID, ResourceType string
		}
		Done bool
		Last int
	}
	if err := o.getJSON(ctx, "/changes?limit=100&since="+strconv.Itoa(since), &page); err != nil {
		return nil, cursor, false, err
	}
	var out []Instance
	for _, c := range page.Changes {
		if c.ChangeType != "NewInstance" {
			continue
		}
		var tags map[string]any
		if err := o.getJSON(ctx, "/instances/"+url.PathEscape(c.ID)+"/simplified-tags", &tags); err != nil {
			return nil, cursor, false, err
		}
		str := func(k string) string { s, _ := tags[k].(string); return s }
		out = append(out, Instance{Ref: c.ID, SOPInstanceUID: str("SOPInstanceUID"), SOPClassUID: str("SOPClassUID"),
			StudyInstanceUID: str("StudyInstanceUID"), SeriesUID: str("SeriesInstanceUID"), Modality: str("Modality"),
			BodyPart: str("BodyPartExamined"), StudyDescription: str("StudyDescription"), SeriesDescription: str("SeriesDescription")})
	}
	next := cursor
	if page.Last > since {
		next = strconv.Itoa(page.Last)
	}
	return out, next, !page.Done, nil
}

// Retrieve fetches an instance's file through Orthanc's REST API.
func (o *Orthanc) Retrieve(ctx context.Context, inst Instance) (io.ReadCloser, error) {
	resp, err := o.get(ctx, "/instances/"+url.PathEscape(inst.Ref)+"/file", "")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Store sends a file through the DICOMweb plugin's STOW-RS.
func (o *Orthanc) Store(ctx context.Context, data []byte) error {
	return o.stow(ctx, o.DICOMwebRoot+"/studies", data)
}

// DICOMweb is any archive with QIDO-RS, WADO-RS and STOW-RS at a root URL. It has no change
// feed: each poll asks QIDO-RS for the instances, a page at a time, and the cursor is the
// offset into that list (an archive that lists in the order it stored, as most do).
type DICOMweb struct{ httpArchive }

// NewDICOMweb is a DICOMweb archive at root (such as http://host/dicom-web).
func NewDICOMweb(root string, client *http.Client) *DICOMweb {
	return &DICOMweb{httpArchive{base: strings.TrimRight(root, "/"), client: client}}
}

// Changes lists instances with QIDO-RS from the offset cursor.
func (d *DICOMweb) Changes(ctx context.Context, cursor string) ([]Instance, string, bool, error) {
	offset := 0
	if cursor != "" {
		n, err := strconv.Atoi(cursor)
		if err != nil {
			return nil, cursor, false, fmt.Errorf("pacs: DICOMweb cursor %q is not an offset", cursor)
		}
		offset = n
	}
	const limit = 100
	var found []map[string]struct {
		Value []any
	}
	q := fmt.Sprintf("/instances?limit=%d&offset=%d&includefield=00080060&includefield=00081030&includefield=0008103E&includefield=00180015", limit, offset)
	if err := d.getJSON(ctx, q, &found); err != nil {
		return nil, cursor, false, err
	}
	var out []Instance
	for _, f := range found {
		str := func(tag string) string {
			if v := f[tag].Value; len(v) > 0 {
				s, _ := v[0].(string)
				return s
			}
			return ""
		}
		inst := Instance{SOPInstanceUID: str("00080018"), SOPClassUID: str("00080016"), StudyInstanceUID: str("0020000D"),
			SeriesUID: str("0020000E"), Modality: str("00080060"), BodyPart: str("00180015"),
			StudyDescription: str("00081030"), SeriesDescription: str("0008103E")}
		inst.Ref = "/studies/" + inst.StudyInstanceUID + "/series/" + inst.SeriesUID + "/instances/" + inst.SOPInstanceUID
		out = append(out, inst)
	}
	return out, strconv.Itoa(offset + len(found)), len(found) == limit, nil
}

// Retrieve fetches an instance with WADO-RS, as the single part of a multipart/related answer.
func (d *DICOMweb) Retrieve(ctx context.Context, inst Instance) (io.ReadCloser, error) {
	resp, err := d.get(ctx, inst.Ref, `multipart/related; type="application/dicom"`)
	if err != nil {
		return nil, err
	}
	mr, err := multipartReader(resp)
	if err != nil {
		resp.Body.Close()
		return nil, err
	}
	part, err := mr.NextPart()
	if err != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: WADO-RS %s: %v", ErrArchive, inst.Ref, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{part, resp.Body}, nil
}

func multipartReader(resp *http.Response) (*multipart.Reader, error) {
	ct := resp.Header.Get("Content-Type")
	i := strings.Index(ct, "boundary=")
	if i < 0 {
		return nil, fmt.Errorf("%w: WADO-RS answered %q, not multipart", ErrArchive, ct)
	}
	boundary := strings.Trim(strings.SplitN(ct[i+len("boundary="):], ";", 2)[0], `"`)
	return multipart.NewReader(resp.Body, boundary), nil
}

// Store sends a file with STOW-RS.
func (d *DICOMweb) Store(ctx context.Context, data []byte) error {
	return d.stow(ctx, "/studies", data)
}
