package pacs

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// State is what the worker has done, kept on disk so that a restart resumes where it stopped:
// the archive's cursor, every instance sent (never sent twice), each study's findings and
// their states, and the reports stored.
type State struct {
	Cursor string `json:"cursor"`
	// WatchAfter is the last review change seen.
	WatchAfter int64 `json:"watch_after"`
	// Analysed maps each SOP Instance UID sent to its study.
	Analysed map[string]string `json:"analysed"`
	// Skipped counts the instances no model's route takes.
	Skipped int64 `json:"skipped"`
	// Failed maps the SOP Instance UID of each instance given up on to why: refused by
	// Imaging (InvalidArgument, FailedPrecondition), or Internal MaxTries times. It is not
	// sent again; `vigil pacs status` lists it.
	Failed map[string]string `json:"failed,omitempty"`
	// Tries counts, per SOP Instance UID, the Internal answers so far.
	Tries   map[string]int    `json:"tries,omitempty"`
	Studies map[string]*Study `json:"studies"`
	// LastError is the most recent failure, for `vigil pacs status`.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	Errors      int64     `json:"errors"`
}

// Study is one study the worker sent instances of.
type Study struct {
	// Findings maps finding IDs to their review state (pending, claimed, accepted, ...).
	Findings map[string]string `json:"findings"`
	// Report is the SR's SOP Instance UID once made; Stored says it reached the archive.
	Report  string `json:"report,omitempty"`
	Stored  bool   `json:"stored,omitempty"`
	Nothing bool   `json:"nothing_to_report,omitempty"`
}

// Decided says whether every finding of the study has a decision.
func (s *Study) Decided() bool {
	for _, st := range s.Findings {
		if st == "pending" || st == "claimed" {
			return false
		}
	}
	return len(s.Findings) > 0
}

// StateFile is the state's name in the state folder.
const StateFile = "pacs-state.json"

// LoadState reads the state in dir, or starts one.
func LoadState(dir string) (*State, error) {
	st := &State{Analysed: map[string]string{}, Studies: map[string]*Study{}, Failed: map[string]string{}, Tries: map[string]int{}}
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pacs: state: %w", err)
	}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("pacs: state %s: %w", filepath.Join(dir, StateFile), err)
	}
	if st.Analysed == nil {
		st.Analysed = map[string]string{}
	}
	if st.Studies == nil {
		st.Studies = map[string]*Study{}
	}
	if st.Failed == nil {
		st.Failed = map[string]string{}
	}
	if st.Tries == nil {
		st.Tries = map[string]int{}
	}
	return st, nil
}

// Save writes the state to dir atomically: a crash leaves the old state or the new.
func (st *State) Save(dir string) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pacs: state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".state-*")
	if err != nil {
		return fmt.Errorf("pacs: state: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pacs: state: %w", err)
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, StateFile))
}
