// kv console: a client of the node's documented HTTP API (README "HTTP API"), nothing else.
// Every key and value reaches the page through textContent (never innerHTML): data is shown,
// never parsed as markup, and the Content-Security-Policy forbids any script but this file.
"use strict";

const BIG = 64 * 1024;          // values over this are not fetched until asked
const PAGE = 50;                // keys per listing page
const SAMPLES = 60;             // a minute of chart history
const MAX_EVENTS = 500;

const $ = (id) => document.getElementById(id);
const state = {
  info: null, up: null, tab: "keys",
  search: { prefix: "", cursor: null, seq: 0 },
  current: null,                // {key, item, bytes, raw, binary}
  watch: { es: null, prefix: "", cursor: null, paused: false },
  samples: { ops: [], p99: [], lastOps: null, lastBuckets: null },
  user: undefined,              // who is logged in: null on an open node, a user once known
};

// -- helpers ----------------------------------------------------------------------------------

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

async function api(path, opts = {}) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), opts.timeout || 5000);
  try {
    // The header asks the node for no Basic challenge: a 401 shows our form, not a dialog.
    const headers = { ...(opts.headers || {}), "x-kv-console": "1" };
    const resp = await fetch(path, { ...opts, headers, signal: ctl.signal, cache: "no-store" });
    if (resp.status === 401) showLogin();
    if (!resp.ok) {
      let msg = `${resp.status} ${resp.statusText}`;
      try { msg = (await resp.json()).error.message || msg; } catch (e) { /* not JSON */ }
      const err = new Error(msg); err.status = resp.status; throw err;
    }
    return resp;
  } finally { clearTimeout(timer); }
}
const getJSON = async (path) => (await api(path)).json();

function keyBytes(key) {             // a listing's key: text, or {"base64": ...} when not UTF-8
  if (typeof key === "string") return new TextEncoder().encode(key);
  return Uint8Array.from(atob(key.base64), (c) => c.charCodeAt(0));
}
function keyPath(key) {
  let out = "";
  for (const b of keyBytes(key)) out += "%" + b.toString(16).padStart(2, "0");
  return "/v1/kv/" + out;
}
function keyText(key) {              // how a key reads on screen
  if (typeof key === "string") return key;
  let out = "";
  for (const b of keyBytes(key)) {
    out += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : "\\x" + b.toString(16).padStart(2, "0");
  }
  return out;
}
const keyId = (key) => (typeof key === "string" ? key : JSON.stringify(key));
const sameKey = (a, b) => keyId(a) === keyId(b);

function bytesText(n) {
  if (n < 1024) return `${n} byte${n === 1 ? "" : "s"}`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n, i = -1;
  do { v /= 1024; i++; } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}
function duration(s) {
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s}s`;
  const parts = [[86400, "d"], [3600, "h"], [60, "m"], [1, "s"]];
  const out = [];
  for (const [size, unit] of parts) {
    if (s >= size || out.length) { out.push(`${Math.floor(s / size)}${unit}`); s %= size; }
    if (out.length === 2) break;
  }
  return out.join(" ");
}
function ttlText(expiresAt) {
  if (expiresAt === null) return "no expiry";
  const left = (expiresAt - Date.now()) / 1000;
  return left <= 0 ? "expired" : `expires in ${duration(Math.ceil(left))}`;
}
function say(text, error = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", error);
  clearTimeout(say.timer);
  if (text) say.timer = setTimeout(() => { s.textContent = ""; }, error ? 8000 : 3000);
}

// -- tabs -------------------------------------------------------------------------------------

const TABS = ["keys", "watch", "cluster", "node"];
function showTab(name, focus = false) {
  state.tab = name;
  for (const t of TABS) {
    $(`section-${t}`).hidden = t !== name;
    $(`tab-${t}`).setAttribute("aria-selected", String(t === name));
  }
  if (focus) $(`tab-${name}`).focus();
  if (location.hash !== "#" + name) history.replaceState(null, "", "#" + name);
  if (name === "cluster") refreshMembers();
}
function setupTabs() {
  TABS.forEach((t, i) => {
    const b = $(`tab-${t}`);
    b.addEventListener("click", () => showTab(t));
    b.addEventListener("keydown", (e) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (step) { e.preventDefault(); showTab(TABS[(i + step + TABS.length) % TABS.length], true); }
    });
  });
  const fromHash = () => (TABS.includes(location.hash.slice(1)) ? location.hash.slice(1) : "keys");
  window.addEventListener("hashchange", () => showTab(fromHash()));
  showTab(fromHash());
}

// -- keys: search and list --------------------------------------------------------------------

async function listKeys(fresh) {
  const s = state.search;
  const seq = fresh ? ++s.seq : s.seq;
  const q = new URLSearchParams({ prefix: s.prefix, limit: String(PAGE), meta: "1" });
  if (!fresh && s.cursor) q.set("cursor", s.cursor);
  try {
    const page = await getJSON(`/v1/kv?${q}`);
    if (seq !== s.seq) return;  // a newer search started: this answer is stale
    if (fresh) $("keys").replaceChildren();
    for (const item of page.items) addKeyItem(item);
    s.cursor = page.cursor;
    $("more").hidden = page.cursor === null;
    const n = $("keys").children.length;
    $("keys-count").textContent = `${n}${page.cursor === null ? "" : "+"} key${n === 1 ? "" : "s"}`
      + (s.prefix ? " with this prefix" : "");
  } catch (e) { say(`Listing failed: ${e.message}`, true); }
}

function keyItem(key) {
  for (const li of $("keys").children) if (li.dataset.key === keyId(key)) return li;
  return null;
}

function addKeyItem(item) {
  if (keyItem(item.key)) return;
  const li = el("li", "key-item");
  li.dataset.key = keyId(item.key);
  li.tabIndex = 0;
  li.setAttribute("role", "button");
  const k = el("span", "key");
  if (typeof item.key !== "string") k.append(el("span", "badge", "bin"));
  k.append(document.createTextNode(keyText(item.key)));
  k.title = keyText(item.key);
  li.append(k, el("span", "ttl"));
  li.item = { key: item.key, size: item.size,
              expiresAt: item.ttl_ms == null ? null : Date.now() + item.ttl_ms };
  renderTtl(li);
  li.addEventListener("click", () => openKey(li.item));
  li.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openKey(li.item); }
    if (e.key === "ArrowDown" && li.nextElementSibling) { e.preventDefault(); li.nextElementSibling.focus(); }
    if (e.key === "ArrowUp" && li.previousElementSibling) { e.preventDefault(); li.previousElementSibling.focus(); }
  });
  $("keys").append(li);
}

function renderTtl(li) {
  const span = li.querySelector(".ttl");
  span.textContent = ttlText(li.item.expiresAt);
  span.classList.toggle("expiring", li.item.expiresAt !== null);
}

function setupSearch() {
  let timer = null;
  $("search").addEventListener("input", () => {
    clearTimeout(timer);
    // The old listing's cursor means nothing for the new prefix: no "more" until it answers.
    state.search.cursor = null;
    $("more").hidden = true;
    state.search.seq++;
    timer = setTimeout(() => { state.search.prefix = $("search").value; listKeys(true); }, 200);
  });
  $("search").addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown" && $("keys").firstElementChild) {
      e.preventDefault(); $("keys").firstElementChild.focus();
    }
  });
  $("more").addEventListener("click", () => listKeys(false));
}

// -- keys: the value --------------------------------------------------------------------------

async function openKey(item) {
  state.current = { key: item.key, item, bytes: null, raw: false };
  for (const li of $("keys").children) li.classList.toggle("selected", li.item === item);
  $("value-empty").hidden = true;
  $("value").hidden = false;
  $("value-key").textContent = keyText(item.key);
  if (window.matchMedia("(max-width: 760px)").matches) $("value").scrollIntoView();
  $("confirm-delete").hidden = true;
  $("editor-box").hidden = true;
  $("view-raw").hidden = true;
  $("load-full").hidden = true;
  $("value-view").replaceChildren();
  renderMeta();
  if (item.size !== undefined && item.size > BIG) {
    $("value-view").append(el("p", "note", `This value is ${bytesText(item.size)}: it is not `
      + "loaded until you ask."));
    $("load-full").hidden = false;
    return;
  }
  await loadValue();
}

async function loadValue() {
  const cur = state.current;
  try {
    const resp = await api(keyPath(cur.key));
    const bytes = new Uint8Array(await resp.arrayBuffer());
    if (state.current !== cur) return;
    cur.bytes = bytes;
    cur.item.size = bytes.length;
    renderMeta();
    renderValue();
  } catch (e) {
    if (e.status === 404) { say("That key no longer exists.", true); dropKey(cur.key); return; }
    say(`Reading the value failed: ${e.message}`, true);
  }
}

function renderMeta() {
  const cur = state.current;
  if (!cur) return;
  const size = cur.item.size === undefined ? "size unknown" : bytesText(cur.item.size);
  $("value-meta").textContent = `${size} · ${ttlText(cur.item.expiresAt)}`;
}

function decodeText(bytes) {        // text when UTF-8 and mostly printable; null: binary
  let text;
  try { text = new TextDecoder("utf-8", { fatal: true }).decode(bytes); } catch (e) { return null; }
  let control = 0;
  for (const ch of text) {
    const c = ch.codePointAt(0);
    if (c < 0x20 && c !== 9 && c !== 10 && c !== 13) control++;
  }
  return control > text.length / 10 ? null : text;
}

function renderValue() {
  const cur = state.current;
  const view = $("value-view");
  view.replaceChildren();
  const text = decodeText(cur.bytes);
  cur.binary = text === null;
  // Both reasons hold the button: a value shown after applyPermissions() must not re-enable it.
  $("edit").disabled = cur.binary || readOnly();
  $("edit").title = text === null ? "binary values cannot be edited as text here" : "";
  if (text === null) {
    view.append(el("pre", "hex", hexDump(cur.bytes)));
    return;
  }
  let doc;
  try { doc = JSON.parse(text); } catch (e) { doc = undefined; }
  const isJson = doc !== null && typeof doc === "object";
  $("view-raw").hidden = !isJson;
  $("view-raw").textContent = cur.raw ? "Pretty" : "Raw";
  if (isJson && !cur.raw) {
    const box = el("div", "json");
    box.append(jsonNode(doc, null, true));
    view.append(box);
  } else {
    view.append(el("pre", "text", text));
  }
}

function jsonNode(value, name, last) {
  const label = () => {
    const frag = document.createDocumentFragment();
    if (name !== null) frag.append(el("span", "k", JSON.stringify(name)), ": ");
    return frag;
  };
  const comma = last ? "" : ",";
  if (value === null || typeof value !== "object") {
    const line = el("div", "leaf");
    const kind = { string: "s", number: "n", boolean: "b" }[typeof value] || "z";
    line.append(label(), el("span", kind, JSON.stringify(value)), comma);
    return line;
  }
  const isArray = Array.isArray(value);
  const entries = isArray ? value.map((v, i) => [null, v]) : Object.entries(value);
  const [open, close] = isArray ? ["[", "]"] : ["{", "}"];
  const details = el("details");
  details.open = true;
  const summary = el("summary");
  const count = `${entries.length} ${isArray ? "item" : "key"}${entries.length === 1 ? "" : "s"}`;
  summary.append(label(), open, el("span", "hint", ` … ${count} ${close}${comma}`));
  const children = el("div", "children");
  entries.forEach(([k, v], i) => children.append(jsonNode(v, k, i === entries.length - 1)));
  details.append(summary, children, el("div", "close", close + comma));
  return details;
}

function hexDump(bytes) {
  const lines = [];
  for (let off = 0; off < bytes.length; off += 16) {
    const row = bytes.subarray(off, off + 16);
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${off.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  |${ascii}|`);
  }
  return lines.join("\n") || "(empty)";
}

function dropKey(key) {
  const li = keyItem(key);
  if (li) li.remove();
  if (state.current && sameKey(state.current.key, key)) {
    state.current = null;
    $("value").hidden = true;
    $("value-empty").hidden = false;
  }
}

async function putValue(key, body, ttl, extra = "") {
  const q = new URLSearchParams();
  if (ttl) q.set("ttl", String(ttl));
  const query = q.toString() + extra;
  await api(keyPath(key) + (query ? "?" + query : ""), { method: "PUT", body });
}

function remainingTtl(item) {       // a PUT replaces the TTL: carry the one left over an edit
  return item.expiresAt === null ? null : Math.max(1, Math.ceil((item.expiresAt - Date.now()) / 1000));
}

function setupValueActions() {
  $("edit").addEventListener("click", () => {
    const cur = state.current;
    if (!cur || !cur.bytes) return;
    $("editor").value = new TextDecoder().decode(cur.bytes);
    $("editor-box").hidden = false;
    $("editor").focus();
  });
  $("cancel-edit").addEventListener("click", () => { $("editor-box").hidden = true; });
  $("save").addEventListener("click", async () => {
    const cur = state.current;
    const body = new TextEncoder().encode($("editor").value);
    try {
      await putValue(cur.key, body, remainingTtl(cur.item));
      $("editor-box").hidden = true;
      cur.bytes = body; cur.item.size = body.length;
      renderMeta(); renderValue();
      say("Saved.");
    } catch (e) { say(`Saving failed: ${e.message}`, true); }
  });
  $("set-ttl").addEventListener("click", setTtl);
  $("ttl-input").addEventListener("keydown", (e) => { if (e.key === "Enter") setTtl(); });
  $("view-raw").addEventListener("click", () => {
    state.current.raw = !state.current.raw; renderValue();
  });
  $("load-full").addEventListener("click", async () => {
    $("load-full").hidden = true;
    $("value-view").replaceChildren(el("p", "note", "Loading…"));
    await loadValue();
  });
  $("delete").addEventListener("click", () => {
    $("confirm-text").textContent = `Delete ${keyText(state.current.key)}? This cannot be undone.`;
    $("confirm-delete").hidden = false;
    $("confirm-no").focus();
  });
  $("confirm-no").addEventListener("click", () => {
    $("confirm-delete").hidden = true; $("delete").focus();
  });
  $("confirm-yes").addEventListener("click", async () => {
    const key = state.current.key;
    try {
      await api(keyPath(key), { method: "DELETE" });
      $("confirm-delete").hidden = true;
      dropKey(key);
      say("Deleted.");
    } catch (e) { say(`Deleting failed: ${e.message}`, true); }
  });
}

async function setTtl() {
  const cur = state.current;
  const raw = $("ttl-input").value.trim();
  const ttl = raw === "" ? null : Number(raw);
  if (ttl !== null && !(Number.isInteger(ttl) && ttl > 0)) {
    say("The TTL is a whole number of seconds (empty: no expiry).", true); return;
  }
  try {
    // The expiry alone (PATCH): the value neither travels nor is written back over a newer one.
    await api(keyPath(cur.key) + (ttl === null ? "?persist" : `?ttl=${ttl}`), { method: "PATCH" });
    cur.item.expiresAt = ttl === null ? null : Date.now() + ttl * 1000;
    const li = keyItem(cur.key);
    if (li) renderTtl(li);
    renderMeta();
    say(ttl === null ? "The key no longer expires." : `The key expires in ${duration(ttl)}.`);
  } catch (e) {
    if (e.status === 404) { say("That key no longer exists.", true); dropKey(cur.key); return; }
    say(`Setting the TTL failed: ${e.message}`, true);
  }
}

function setupNewKey() {
  $("new-key").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = $("new-key-name").value;
    const rawTtl = $("new-key-ttl").value.trim();
    if (!name) { say("The key needs a name.", true); return; }
    const ttl = rawTtl === "" ? null : Number(rawTtl);
    if (ttl !== null && !(Number.isInteger(ttl) && ttl > 0)) {
      say("The TTL is a whole number of seconds.", true); return;
    }
    try {
      await putValue(name, new TextEncoder().encode($("new-key-value").value), ttl, "&nx");
    } catch (err) {
      say(err.status === 412 ? "That key already exists." : `Creating failed: ${err.message}`, true);
      return;
    }
    $("new-key").reset();
    say("Created.");
    const item = { key: name, size: undefined, ttl_ms: ttl === null ? null : ttl * 1000 };
    if (name.startsWith(state.search.prefix)) addKeyItem(item);
    const li = keyItem(name);
    openKey(li ? li.item : { key: name, expiresAt: item.ttl_ms === null ? null : Date.now() + item.ttl_ms });
  });
}

// -- live changes -----------------------------------------------------------------------------

function watchConnect() {
  const w = state.watch;
  if (w.es) w.es.close();
  const q = new URLSearchParams({ prefix: w.prefix });
  if (w.cursor) q.set("from", w.cursor);  // resume right after the last change shown
  const es = new EventSource(`/v1/watch?${q}`);
  w.es = es;
  es.onopen = () => watchStatus(`Watching ${w.prefix ? `prefix “${w.prefix}”` : "every key"}.`);
  es.onmessage = (e) => {
    if (w.paused || w.es !== es) return;
    let ev;
    try { ev = JSON.parse(e.data); } catch (err) { return; }
    if (e.lastEventId) w.cursor = e.lastEventId;
    showEvent(ev);
  };
  es.addEventListener("reset", () => {
    watchStatus("The node no longer held every change missed: its current state follows.");
  });
  es.onerror = () => {
    if (w.es !== es) return;
    watchStatus("Connection lost: reconnecting…");
    if (es.readyState === EventSource.CLOSED) setTimeout(() => { if (w.es === es && !w.paused) watchConnect(); }, 2000);
  };
}

function watchStatus(text) { $("watch-status").textContent = text; }

function showEvent(ev) {
  const li = el("li", "event fresh");
  li.dataset.op = ev.op;
  li.dataset.key = keyId(ev.key);
  let value = "";
  if (ev.value !== null && ev.value !== undefined) {
    value = typeof ev.value === "string" ? ev.value : `(binary, base64) ${ev.value.base64}`;
    if (value.length > 2000) value = value.slice(0, 2000) + "…";
  }
  li.append(el("span", "op", ev.op), el("span", "key", keyText(ev.key)), el("span", "value", value),
            el("span", "origin", ev.origin ? `from ${ev.origin}` : ""));
  const list = $("events");
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

function setupWatch() {
  const w = state.watch;
  $("watch-form").addEventListener("submit", (e) => {
    e.preventDefault();
    w.prefix = $("watch-prefix").value;
    w.cursor = null;
    w.paused = false;
    $("events").replaceChildren();
    $("watch-pause").disabled = false;
    $("watch-pause").textContent = "Pause";
    watchStatus("Connecting…");
    watchConnect();
  });
  $("watch-pause").addEventListener("click", () => {
    w.paused = !w.paused;
    $("watch-pause").textContent = w.paused ? "Resume" : "Pause";
    if (w.paused) {
      if (w.es) w.es.close();
      w.es = null;
      watchStatus("Paused: changes are not shown. Resume picks up from the last one shown.");
    } else {
      watchStatus("Resuming…");
      watchConnect();
    }
  });
}

// -- cluster ----------------------------------------------------------------------------------

// Everything here comes from our own node's /v1/members: each member tells the others its HTTP
// door and its digest in its heartbeats, so the page never calls a member cross-origin (which
// a login would refuse anyway: our session cookie is our node's alone).
const DIGEST_FRESH_MS = 3000;      // a digest older than this (a silent member's) is not compared

async function refreshMembers() {
  if (refreshMembers.busy || !state.info) return;
  refreshMembers.busy = true;
  try {
    renderMembers(await getJSON("/v1/members"));
  } catch (e) { /* the banner says the node is down */ } finally { refreshMembers.busy = false; }
}

function consoleLink(m) {          // a member's console, as it told us; only http(s) URLs
  if (m.self || !m.http || !/^https?:\/\/[^/]+$/.test(m.http)) return null;
  return m.status === "alive" || m.status === "suspect" ? `${m.http}/` : null;
}

function cell(row, cls, text) {
  let td = row.querySelector(`td.${cls}`);
  if (!td) { td = el("td", cls); row.append(td); }
  if (text !== undefined && td.textContent !== text) td.textContent = text;
  return td;
}

function renderMembers(members) {
  const body = $("members").tBodies[0];
  const seen = new Set();
  for (const m of members) {
    seen.add(m.name);
    let row = Array.from(body.rows).find((r) => r.dataset.member === m.name);
    if (!row) { row = el("tr"); row.dataset.member = m.name; body.append(row); }
    row.className = `member status-${m.status}${m.self ? " self" : ""}`;
    cell(row, "name", m.name);
    cell(row, "address", m.address);
    cell(row, "status", m.status);
    cell(row, "last-seen", m.self ? "now" : m.last_seen_ms < 1000 ? "just now" : `${duration(m.last_seen_ms / 1000)} ago`);
    cell(row, "lag", m.self ? "—" : m.lag_ms ? `${m.lag_ms} ms` : "0 ms");
    cell(row, "digest", m.digest || "unknown");
    const link = cell(row, "console");
    const href = consoleLink(m);
    const a = link.querySelector("a");
    if (!href) link.replaceChildren(el("span", "muted", m.self ? "you are here" : "—"));
    else if (!a || a.getAttribute("href") !== href) {
      const open = el("a", "open-console", "open console");
      open.href = href;
      link.replaceChildren(open);
    }
  }
  for (const row of Array.from(body.rows)) if (!seen.has(row.dataset.member)) row.remove();
  renderDigests(members);
}

function renderDigests(members) {  // agreement is claimed only over digests actually compared
  const live = members.filter((m) => m.status === "alive" || m.status === "suspect");
  const known = live.filter((m) => m.digest && m.digest_age_ms !== null && m.digest_age_ms <= DIGEST_FRESH_MS);
  const n = live.length;
  let verdict, note;
  if (known.length < n) {
    verdict = "unknown";
    note = `(${known.length} of ${n} live members' digests known: the others' are not fresh `
      + "or not reported — an older kv, or not heard from in the last few seconds)";
  } else {
    verdict = known.every((m) => m.digest === known[0].digest) ? "agree" : "differ";
    note = `(${n} live member${n === 1 ? "" : "s"} compared)`;
  }
  $("digests").textContent = { agree: "digests agree", differ: "digests differ",
                               unknown: "cannot compare digests" }[verdict];
  $("digests").className = `digests ${verdict}`;
  $("digests-note").textContent = note;
}

// -- node -------------------------------------------------------------------------------------

function parseBuckets(text) {       // kv_loop_turn_seconds_bucket{le="..."} N, cumulative
  const out = [];
  const re = /^kv_loop_turn_seconds_bucket\{le="([^"]+)"\} ([0-9.e+-]+)$/gm;
  let m;
  while ((m = re.exec(text))) out.push([m[1] === "+Inf" ? Infinity : Number(m[1]), Number(m[2])]);
  return out;
}
function metric(text, name) {
  const m = new RegExp(`^${name} ([0-9.e+-]+)$`, "m").exec(text);
  return m ? Number(m[1]) : null;
}

function p99(prev, now) {           // from the bucket counts added since the last sample
  if (!prev || prev.length !== now.length) return null;
  const delta = now.map(([le, n], i) => [le, n - prev[i][1]]);
  const total = delta[delta.length - 1][1];
  if (total <= 0) return 0;
  for (const [le, n] of delta) if (n >= total * 0.99) return le;
  return null;
}

function push(list, v) { list.push(v); if (list.length > SAMPLES) list.shift(); }

function drawChart(svg, values, format) {
  const NS = "http://www.w3.org/2000/svg";
  const max = Math.max(...values.filter(Number.isFinite), 0) || 1;
  const pts = values.map((v, i) => [(i / (SAMPLES - 1)) * 300,
    100 - (Number.isFinite(v) ? v / max : 1) * 92]);
  const offset = 300 - (pts.length ? pts[pts.length - 1][0] : 0);
  const line = pts.map(([x, y]) => `${(x + offset).toFixed(1)},${y.toFixed(1)}`).join(" ");
  const shape = (tag, attrs) => {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  };
  const kids = [25, 50, 75].map((y) => shape("line", { class: "grid", x1: 0, x2: 300, y1: y, y2: y }));
  if (pts.length > 1) {
    const first = (pts[0][0] + offset).toFixed(1);
    kids.push(shape("polygon", { class: "area", points: `${first},100 ${line} 300,100` }));
    kids.push(shape("polyline", { class: "line", points: line }));
  }
  const title = shape("title", {});
  title.textContent = `max ${format(max)}`;
  kids.push(title);
  svg.replaceChildren(...kids);
}

function ms(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (!Number.isFinite(seconds)) return "> 10 s";
  return seconds < 0.001 ? `${(seconds * 1e6).toFixed(0)} µs` : `${(seconds * 1000).toFixed(1)} ms`;
}

function renderNode(info, metricsText) {
  const s = state.samples;
  if (s.lastOps) {
    const dt = (info.at - s.lastOps.at) / 1000;
    push(s.ops, Math.max(0, (info.commands_processed - s.lastOps.n) / dt));
  }
  s.lastOps = { at: info.at, n: info.commands_processed };
  if (metricsText) {
    const buckets = parseBuckets(metricsText);
    const q = p99(s.lastBuckets, buckets);
    if (q !== null) push(s.p99, q);
    s.lastBuckets = buckets;
    const rss = metric(metricsText, "kv_memory_rss_bytes");
    $("stat-memory").textContent = rss === null ? "unknown" : bytesText(rss);
  }
  const last = (l) => (l.length ? l[l.length - 1] : null);
  $("ops-now").textContent = last(s.ops) === null ? "" : `${last(s.ops).toFixed(0)}/s`;
  $("p99-now").textContent = last(s.p99) === null ? "" : ms(last(s.p99));
  drawChart($("chart-ops"), s.ops, (v) => `${v.toFixed(0)}/s`);
  drawChart($("chart-p99"), s.p99, ms);
  $("stat-keys").textContent = info.keys.toLocaleString();
  $("stat-log").textContent = bytesText(info.log_size);
  $("stat-fsync").textContent = info.fsync;
  $("stat-uptime").textContent = duration(info.uptime_s);
  let compaction = "never";
  if (info.last_compaction_at) {
    const at = new Date(info.last_compaction_at * 1000);
    compaction = `${at.toLocaleString()} (${duration(Date.now() / 1000 - info.last_compaction_at)} ago, `
      + `took ${info.last_compaction_s.toFixed(2)} s)`;
  }
  $("stat-compaction").textContent = info.compacting ? `running now; last: ${compaction}` : compaction;
}

// -- the heartbeat: one poll a second tells up from down --------------------------------------

function setUp(up, why) {
  const banner = $("banner");
  const pill = $("node-state");
  if (up) {
    const info = state.info;
    banner.hidden = info.log_writable !== false;
    banner.className = "banner warn";
    banner.textContent = info.log_writable === false
      ? `The node cannot write its log (${info.log_error || "unknown error"}): writes fail until it can.` : "";
  } else {
    banner.hidden = false;
    banner.className = "banner";
    banner.textContent = `The node does not answer (${why}). Retrying every second; this page `
      + "recovers by itself when it is back.";
  }
  pill.textContent = up ? "connected" : "offline";
  pill.className = `pill ${up ? "up" : "down"}`;
  if (up && state.up === false) {
    say("The node is back.");
    if (state.tab === "keys") listKeys(true);
  }
  state.up = up;
}

// -- login ----------------------------------------------------------------------------------

function showLogin() {
  if (!document.body.classList.contains("locked")) {
    document.body.classList.add("locked");
    $("login").hidden = false;
    $("login-user").focus();
  }
}

async function whoami() {
  try {
    state.user = await getJSON("/v1/whoami");
  } catch (e) {
    return;                        // 401 shows the form; anything else: the poll reports it
  }
  const who = $("whoami");
  who.hidden = $("logout").hidden = !state.user;
  if (state.user) who.textContent = `as ${state.user.name}`;
  applyPermissions();
}

function readOnly() {              // a user who may write nothing
  const u = state.user;
  return !!u && !u.admin && u.write.length === 0;
}

function applyPermissions() {      // ... gets no controls that write
  const ro = readOnly();
  for (const id of ["new-key-save", "delete", "set-ttl", "save"]) $(id).disabled = ro;
  $("edit").disabled = ro || !!(state.current && state.current.binary);  // see renderValue
  $("new-key").title = ro ? `user ${state.user.name} may read, not write` : "";
  document.body.classList.toggle("readonly", ro);
}

function setupLogin() {
  $("login").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const error = $("login-error");
    error.hidden = true;
    try {
      await api("/v1/login", {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ user: $("login-user").value, password: $("login-password").value }),
      });
    } catch (e) {
      error.textContent = e.status === 401 ? `Log-in refused: ${e.message}` : e.message;
      error.hidden = false;
      return;
    }
    $("login-password").value = "";
    $("login").hidden = true;
    document.body.classList.remove("locked");
    await whoami();
    listKeys(true);
  });
  $("logout").addEventListener("click", async () => {
    await api("/v1/logout", { method: "POST" }).catch(() => null);
    state.user = undefined;
    $("whoami").hidden = $("logout").hidden = true;
    showLogin();
  });
}

async function poll() {
  try {
    const [info, metricsText] = await Promise.all([
      getJSON("/v1/info"),
      api("/metrics").then((r) => r.text()).catch(() => null),
    ]);
    info.at = Date.now();
    state.info = info;
    $("node-name").textContent = info.name;
    $("node-address").textContent = `${info.address} · v${info.version}`;
    document.title = `${info.name} · kv console`;
    setUp(true);
    renderNode(info, metricsText);
    if (state.tab === "cluster") refreshMembers();
  } catch (e) {
    if (e.status === 401) { setTimeout(poll, 1000); return; }   // the login form is up
    setUp(false, e.name === "AbortError" ? "no answer within 5 s" : e.message);
    state.samples.lastOps = null;
    state.samples.lastBuckets = null;
  }
  for (const li of $("keys").children) if (li.item.expiresAt !== null) renderTtl(li);
  renderMeta();
  setTimeout(poll, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  setupTabs();
  setupSearch();
  setupValueActions();
  setupNewKey();
  setupWatch();
  setupLogin();
  poll();
  whoami();
  listKeys(true);
});
