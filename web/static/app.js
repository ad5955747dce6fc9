// Vigil's reviewer page. Plain JavaScript, no build step. Every value from the server is put
// into the page with textContent, never as HTML.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = {
  token: sessionStorage.getItem("vigil-token") || "",
  findings: [],
  selected: -1,
  detail: null,
  lastSeq: 0,
  watching: null,
  viewerURL: "", // a DICOMweb viewer's URL template, {study} the Study Instance UID (vigild --viewer-url)
};

class APIError extends Error {
  constructor(code, message, metadata) {
    super(message);
    this.code = code;
    this.metadata = metadata || {};
  }
}

async function api(method, body) {
  const resp = await fetch("/api/v1/review/" + method, {
    method: "POST",
    headers: { "Authorization": "Bearer " + state.token, "Content-Type": "application/json" },
    body: JSON.stringify(body || {}),
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new APIError(data.code || String(resp.status), data.message || resp.statusText, data.metadata);
  return data;
}

const short = (enumName, prefix) => (enumName || "").replace(prefix, "").toLowerCase().replace(/_/g, "-");
const stateOf = (f) => short(f.state, "FINDING_STATE_");

function age(iso) {
  if (!iso) return "";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 90) return Math.round(s) + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  if (s < 129600) return Math.round(s / 3600) + " h";
  return Math.round(s / 86400) + " d";
}

function sourceText(f) {
  if (f.camera) return "camera " + f.camera.camera_id + " track " + (f.camera.track_id || 0);
  if (f.dicom) return (f.dicom.modality || "") + " " + (f.dicom.sop_instance_uid || "");
  return "";
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
}

// --- sign-in -------------------------------------------------------------------------------

async function signIn(token) {
  state.token = token;
  try {
    await api("Counts", {});
  } catch (e) {
    state.token = "";
    sessionStorage.removeItem("vigil-token");
    $("#signin-error").textContent = e.code === "PermissionDenied"
      ? "This token is not a reviewer's." : "Sign-in failed: " + e.message;
    return;
  }
  sessionStorage.setItem("vigil-token", token);
  $("#signin").hidden = true;
  $("#app").hidden = false;
  $("#who").textContent = "signed in";
  watch();
  await loadList();
}

// --- worklist ------------------------------------------------------------------------------

function listFilter() {
  switch ($("#state-filter").value) {
    case "open": return { states: ["FINDING_STATE_PENDING", "FINDING_STATE_CLAIMED"] };
    case "decided": return { states: ["FINDING_STATE_ACCEPTED", "FINDING_STATE_REJECTED", "FINDING_STATE_AMENDED"] };
  }
  return {};
}

// studyKey groups findings: a DICOM study, or a camera.
function studyKey(f) {
  if (f.dicom) return "study " + (f.dicom.study_instance_uid || "");
  if (f.camera) return "camera " + f.camera.camera_id;
  return "";
}

// byStudy orders findings study by study, each study where its most urgent finding stands.
function byStudy(findings) {
  const groups = new Map();
  for (const f of findings) {
    const k = studyKey(f);
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(f);
  }
  return [].concat(...groups.values());
}

async function loadList() {
  const keep = state.findings[state.selected] ? state.findings[state.selected].id : null;
  const resp = await api("List", { filter: listFilter(), page_size: 200 });
  state.findings = resp.findings || [];
  if ($("#group-by-study").checked) state.findings = byStudy(state.findings);
  let idx = keep ? state.findings.findIndex((f) => f.id === keep) : -1;
  if (idx < 0) idx = Math.min(Math.max(state.selected, 0), state.findings.length - 1);
  renderList();
  await select(idx);
  loadCounts();
}

async function loadCounts() {
  try {
    const c = await api("Counts", {});
    $("#counts").textContent = (c.states || []).map((s) => short(s.state, "FINDING_STATE_") + " " + (s.count || 0)).join(" · ");
  } catch (e) { /* counts are decoration */ }
}

// scoreText is a finding's score: a model's for imaging findings; for ward findings (a fall,
// a gait, a fall risk) a heuristic of the rules that made them, not a probability.
function scoreText(f) {
  const s = (f.score || 0).toFixed(2);
  return imaging(f) ? s : s + " heuristic";
}

// imaging is true for a finding an imaging model made (the API names the pipeline
// PIPELINE_TRIAGE; biometry findings are triage's too).
const imaging = (f) => short(f.pipeline, "PIPELINE_") === "triage";

// studyText is a study's header in the grouped worklist: who, which study, how many findings.
function studyText(f, count) {
  const n = count + (count === 1 ? " finding" : " findings");
  if (f.camera) return "Camera " + f.camera.camera_id + " · " + n;
  const c = f.context || {};
  return [c.patient_name ? personName(c.patient_name) : "unnamed patient", c.patient_id ? "ID " + c.patient_id : "",
    c.accession_number ? "accession " + c.accession_number : "", dicomDate(c.study_date), c.study_description || "", n]
    .filter((x) => x).join(" · ");
}

// personName shows DICOM's FAMILY^GIVEN as "FAMILY, GIVEN".
const personName = (pn) => pn.split("^").filter((x) => x).join(", ");

// dicomDate shows YYYYMMDD as YYYY-MM-DD.
const dicomDate = (d) => d && d.length === 8 ? d.slice(0, 4) + "-" + d.slice(4, 6) + "-" + d.slice(6) : (d || "");

// viewerLink is a link that opens the study in the configured DICOMweb viewer, or null.
function viewerLink(f) {
  if (!state.viewerURL || !f.dicom || !f.dicom.study_instance_uid) return null;
  const a = document.createElement("a");
  a.href = state.viewerURL.replace("{study}", encodeURIComponent(f.dicom.study_instance_uid));
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  a.textContent = "open in viewer";
  a.className = "viewer-link";
  return a;
}

function renderList() {
  const body = $("#worklist tbody");
  body.replaceChildren();
  const grouped = $("#group-by-study").checked;
  const counts = new Map();
  for (const f of state.findings) counts.set(studyKey(f), (counts.get(studyKey(f)) || 0) + 1);
  let lastKey = null;
  state.findings.forEach((f, i) => {
    if (grouped && studyKey(f) !== lastKey) {
      lastKey = studyKey(f);
      const head = document.createElement("tr");
      head.className = "study";
      const td = document.createElement("td");
      td.colSpan = 6;
      td.textContent = studyText(f, counts.get(lastKey));
      const link = viewerLink(f);
      if (link) { td.append(" · "); td.appendChild(link); }
      head.appendChild(td);
      body.appendChild(head);
    }
    const tr = document.createElement("tr");
    tr.dataset.id = f.id;
    tr.dataset.state = stateOf(f);
    if (i === state.selected) tr.className = "selected";
    cell(tr, String(f.priority || 0));
    cell(tr, stateOf(f) + (f.claimed_by ? " (" + f.claimed_by + ")" : ""), "state-" + stateOf(f));
    cell(tr, f.label);
    cell(tr, scoreText(f));
    cell(tr, sourceText(f));
    cell(tr, age(f.created_at));
    tr.addEventListener("click", () => select(i));
    body.appendChild(tr);
  });
}

async function select(i) {
  if (i < 0 || i >= state.findings.length) {
    state.selected = -1;
    state.detail = null;
    renderList();
    renderDetail();
    return;
  }
  state.selected = i;
  renderList();
  const id = state.findings[i].id;
  const resp = await api("Get", { id });
  if (state.findings[state.selected] && state.findings[state.selected].id === id) {
    state.detail = resp;
    renderDetail();
  }
}

// --- finding view --------------------------------------------------------------------------

// number shows a measurement: one decimal, or two significant digits under 1 (a sway of 0.03).
function number(v) {
  const x = Number(v);
  return Math.abs(x) < 1 && x !== 0 ? x.toPrecision(2) : x.toFixed(1);
}

function renderDetail() {
  const d = state.detail;
  $("#empty").hidden = !!d;
  $("#finding").hidden = !d;
  // A message for the reviewer stays while the same version of the same finding is shown: a
  // live update about other findings redraws this one and must not wipe the prompt.
  const shown = $("#finding").dataset;
  if (!d || shown.id !== d.finding.id || shown.version !== String(d.finding.version)) {
    $("#decide-error").textContent = "";
  }
  if (!d) return;
  const f = d.finding;
  $("#finding").dataset.id = f.id;
  $("#finding").dataset.version = f.version;
  $("#f-title").textContent = f.label + " — " + stateOf(f);
  const patient = $("#f-patient");
  patient.replaceChildren();
  if (f.context) {
    const c = f.context;
    patient.textContent = [c.patient_name ? personName(c.patient_name) : "unnamed patient", c.patient_id ? "ID " + c.patient_id : "",
      c.patient_birth_date ? "born " + dicomDate(c.patient_birth_date) : "", c.patient_sex ? "sex " + c.patient_sex : "",
      c.accession_number ? "accession " + c.accession_number : "", dicomDate(c.study_date), c.study_description || ""]
      .filter((x) => x).join(" · ");
  }
  const link = viewerLink(f);
  if (link) { patient.append(" · "); patient.appendChild(link); }
  $("#f-meta").textContent = (imaging(f) ? "model score " : "heuristic score ") + (f.score || 0).toFixed(2) + " · priority " + (f.priority || 0) +
    " · " + (f.model ? f.model.name + " " + f.model.version : "") + " · " + sourceText(f) +
    (f.first_frame ? " · frames " + f.first_frame + "–" + f.last_frame : "") + " · version " + f.version;
  const img = $("#f-overlay");
  if (f.overlay && f.overlay.data) {
    img.src = "data:" + (f.overlay.media_type || "image/png") + ";base64," + f.overlay.data;
    img.hidden = false;
    $("#f-nooverlay").hidden = true;
  } else {
    img.removeAttribute("src");
    img.hidden = true;
    $("#f-nooverlay").hidden = false;
  }
  const mbody = $("#f-measurements tbody");
  mbody.replaceChildren();
  const amendBox = $("#amend-measurements");
  amendBox.replaceChildren();
  (f.measurements || []).forEach((m) => {
    const tr = document.createElement("tr");
    cell(tr, m.name);
    cell(tr, number(m.value));
    cell(tr, m.unit);
    cell(tr, (m.low_quality ? "LOW QUALITY: check before use · " : "") + (m.quality || ""));
    if (m.low_quality) tr.className = "low-quality";
    mbody.appendChild(tr);
    const label = document.createElement("label");
    label.textContent = m.name + " (" + m.unit + ") ";
    const input = document.createElement("input");
    input.dataset.name = m.name;
    input.dataset.unit = m.unit;
    input.placeholder = number(m.value);
    label.appendChild(input);
    amendBox.appendChild(label);
  });
  // Why the finding was put forward: the fall rules that fired, the fall-risk indicators.
  const ev = $("#f-evidence");
  ev.replaceChildren();
  (f.evidence || []).forEach((e) => {
    const li = document.createElement("li");
    li.textContent = e;
    ev.appendChild(li);
  });
  const dec = f.decision;
  $("#f-decision").textContent = dec
    ? short(dec.outcome, "OUTCOME_") + " by " + dec.reviewer + " (" + dec.reason_code + ")" + (dec.comment ? ": " + dec.comment : "")
    : (f.claimed_by ? "claimed by " + f.claimed_by : "awaiting a decision");
  const decided = !!dec;
  ["#accept", "#reject", "#amend"].forEach((b) => { $(b).disabled = decided; });
  $("#release").disabled = stateOf(f) !== "claimed";
  const audit = $("#f-audit");
  audit.replaceChildren();
  (d.audit || []).forEach((a) => {
    const li = document.createElement("li");
    li.textContent = new Date(a.time).toLocaleString() + " — " + a.actor + " " + a.action +
      " → " + stateOf(a.after) + " (v" + a.after.version + ")";
    audit.appendChild(li);
  });
}

function amendment() {
  const a = {};
  const label = $("#amend-label").value.trim();
  if (label) a.label = label;
  const box = $("#amend-box").value.trim();
  if (box) {
    const v = box.split(",").map(Number);
    if (v.length !== 4 || v.some(isNaN)) throw new APIError("InvalidArgument", "box must be x,y,width,height");
    a.box = { x: v[0], y: v[1], width: v[2], height: v[3] };
  }
  const ms = [];
  document.querySelectorAll("#amend-measurements input").forEach((inp) => {
    if (inp.value.trim() !== "") ms.push({ name: inp.dataset.name, value: Number(inp.value), unit: inp.dataset.unit });
  });
  if (ms.length) a.measurements = ms;
  return a;
}

async function decide(outcome) {
  const d = state.detail;
  if (!d || d.finding.decision) return;
  const f = d.finding;
  // The reviewer chooses the reason: an acceptance with none chosen is "confirmed"; a
  // rejection or an amendment needs one, and "confirmed" is not one.
  let reason = $("#reason").value;
  if (outcome === "OUTCOME_ACCEPT" && reason === "") reason = "confirmed";
  if (outcome !== "OUTCOME_ACCEPT" && (reason === "" || reason === "confirmed")) {
    $("#decide-error").textContent = "Choose the reason for this " + (outcome === "OUTCOME_REJECT" ? "rejection" : "amendment") + " first.";
    $("#reason").focus();
    return;
  }
  const req = { id: f.id, version: f.version, outcome, reason_code: reason, comment: $("#comment").value };
  try {
    if (outcome === "OUTCOME_AMEND") req.amendment = amendment();
    await api("Decide", req);
    $("#reason").value = "";
    $("#comment").value = "";
    $("#amend-label").value = "";
    $("#amend-box").value = "";
    await loadList();
  } catch (e) {
    if (e.code === "Aborted") {
      await select(state.selected);
      $("#decide-error").textContent = "This finding changed meanwhile (now version " +
        (e.metadata.current_version || "?") + "); it has been reloaded: decide again.";
    } else {
      $("#decide-error").textContent = e.code + ": " + e.message;
    }
  }
}

async function release() {
  const d = state.detail;
  if (!d) return;
  try {
    await api("Release", { id: d.finding.id, version: d.finding.version });
    await loadList();
  } catch (e) { $("#decide-error").textContent = e.code + ": " + e.message; }
}

async function claimNext() {
  try {
    const resp = await api("ClaimNext", {});
    await loadList();
    if (resp.finding) {
      const i = state.findings.findIndex((f) => f.id === resp.finding.id);
      if (i >= 0) await select(i);
    } else {
      $("#decide-error").textContent = "Nothing is waiting.";
    }
  } catch (e) { $("#decide-error").textContent = e.code + ": " + e.message; }
}

// --- live updates --------------------------------------------------------------------------

async function watch() {
  if (state.watching) return;
  state.watching = true;
  for (;;) {
    try {
      const resp = await fetch("/api/v1/review/watch?after_sequence=" + state.lastSeq, {
        headers: { "Authorization": "Bearer " + state.token },
      });
      if (resp.status === 401 || resp.status === 403) break;
      if (!resp.ok) throw new Error("watch " + resp.status);
      $("#live").textContent = "● live";
      $("#live").className = "on";
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.trim() === "" || line.trim() === "{}") continue;
          onEvent(JSON.parse(line));
        }
      }
    } catch (e) { /* reconnect below */ }
    $("#live").textContent = "○ reconnecting";
    $("#live").className = "";
    await new Promise((r) => setTimeout(r, 2000));
    await loadList().catch(() => {});
  }
  state.watching = false;
}

let reloadPending = null;
function onEvent(ev) {
  state.lastSeq = Math.max(state.lastSeq, Number(ev.sequence));
  // Many events can arrive together: reload once after them.
  clearTimeout(reloadPending);
  reloadPending = setTimeout(() => loadList().catch(() => {}), 100);
}

// --- wiring --------------------------------------------------------------------------------

function typing(ev) {
  const t = ev.target;
  return t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA");
}

document.addEventListener("keydown", (ev) => {
  if ($("#app").hidden || typing(ev) || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  switch (ev.key) {
    case "j": select(Math.min(state.selected + 1, state.findings.length - 1)); break;
    case "k": select(Math.max(state.selected - 1, 0)); break;
    case "a": decide("OUTCOME_ACCEPT"); break;
    case "r": decide("OUTCOME_REJECT"); break;
    case "e": decide("OUTCOME_AMEND"); break;
    case "c": claimNext(); break;
    default: return;
  }
  ev.preventDefault();
});

document.addEventListener("DOMContentLoaded", () => {
  $("#signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    signIn($("#token").value.trim());
  });
  $("#state-filter").addEventListener("change", () => { state.selected = 0; loadList(); });
  $("#group-by-study").addEventListener("change", () => loadList());
  fetch("/api/v1/config").then((r) => r.json()).then((c) => { state.viewerURL = c.viewer_url || ""; }).catch(() => {});
  $("#accept").addEventListener("click", () => decide("OUTCOME_ACCEPT"));
  $("#reject").addEventListener("click", () => decide("OUTCOME_REJECT"));
  $("#amend").addEventListener("click", () => decide("OUTCOME_AMEND"));
  $("#release").addEventListener("click", release);
  if (state.token) signIn(state.token);
});
