package pacs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestArchiveRedirectsStayHome: an archive that redirects the worker to another port is
// refused, and its credentials never reach the other server; a redirect within the archive
// is followed.
func TestArchiveRedirectsStayHome(t *testing.T) {
	var leaked atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := r.BasicAuth(); ok {
			leaked.Add(1)
		}
		w.Write([]byte(`{"Changes": [], "Done": true, "Last": 0}`))
	}))
	defer elsewhere.Close()
	archive := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/changes" && r.URL.Query().Get("since") == "0" {
			http.Redirect(w, r, elsewhere.URL+"/changes", http.StatusFound)
			return
		}
		if r.URL.Path == "/changes" {
			http.Redirect(w, r, "/changes-here", http.StatusFound)
			return
		}
		w.Write([]byte(`{"Changes": [], "Done": true, "Last": 7}`))
	}))
	defer archive.Close()
	o := NewOrthanc(archive.URL, NewHTTPClient(10*time.Second))
	o.SetCredentials("vigil", "s3cret")
	_, _, _, err := o.Changes(context.Background(), "")
	if !errors.Is(err, ErrArchive) || !strings.Contains(err.Error(), "another origin") {
		t.Errorf("a redirect to another port: %v, want it refused", err)
	}
	if leaked.Load() != 0 {
		t.Errorf("the credentials reached the other server %d times", leaked.Load())
	}
	if _, next, _, err := o.Changes(context.Background(), "3"); err != nil || next != "7" {
		t.Errorf("a redirect within the archive: next %q, %v; want it followed", next, err)
	}
}

// TestArchiveAnswersAreBounded: a 63 MB answer is refused with an error naming the limit,
// whether or not it says its length.
func TestArchiveAnswersAreBounded(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		archive := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body := `{"Changes": [], "Pad": "` + strings.Repeat("x", 63<<20) + `"}`
			if !chunked {
				w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			}
			io.WriteString(w, body)
		}))
		o := NewOrthanc(archive.URL, NewHTTPClient(time.Minute))
		_, _, _, err := o.Changes(context.Background(), "")
		archive.Close()
		if !errors.Is(err, ErrArchive) || !strings.Contains(err.Error(), "limit") {
			t.Errorf("chunked %v: a 63 MB answer gave %v, want a refusal naming the limit", chunked, err)
		}
	}
}

// TestArchiveThatNeverMovesOn: an archive that always says more instances wait, without
// moving its cursor, is asked again at the next poll, not at once: over a second with a poll
// of 200 ms, a handful of requests, not a thousand.
func TestArchiveThatNeverMovesOn(t *testing.T) {
	var requests atomic.Int32
	archive := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		json.NewEncoder(w).Encode(map[string]any{"Changes": []any{}, "Done": false, "Last": 0})
	}))
	defer archive.Close()
	srv, conn := grpcServer(t, &imaging{sends: map[string]int{}})
	defer srv.Stop()
	defer conn.Close()
	w := newWorker(NewOrthanc(archive.URL, NewHTTPClient(time.Minute)), conn, t.TempDir())
	w.Poll = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	w.Run(ctx)
	if n := requests.Load(); n > 10 || n < 2 {
		t.Errorf("%d requests in a second with a poll of 200 ms, want a few (one a poll)", n)
	}
}
