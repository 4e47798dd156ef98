// The ChatQnA page: chat over /v1/chat/completions (or OPEA's /v1/chatqna), documents over
// /v1/dataprep/*. Nothing from the model, a document or the network is ever put into the page
// as HTML: every piece of text goes in through textContent or a text node.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  config: { api_key_required: false, rerank: false, defaults: { k: 4, top_n: 1, temperature: 0.01, max_tokens: 1024 } },
  history: [], // {role, content} as sent
  controller: null,
  busy: false,
};

const SETTINGS_KEY = "chatqna.settings";
const API_KEY = "chatqna.api_key";

// ---------- requests ----------

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const key = sessionStorage.getItem(API_KEY);
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

class ApiError extends Error {
  constructor(status, body) {
    const e = body && body.error;
    super((e && e.message) || (typeof e === "string" ? e : "") || "HTTP " + status);
    this.status = status;
    this.param = e && e.param;
  }
}

async function readError(resp) {
  let body = null;
  try { body = await resp.json(); } catch (_) { /* not JSON */ }
  return new ApiError(resp.status, body);
}

// A fetch that asks for the API key once when the server says 401, then tries again.
async function call(url, init) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const resp = await fetch(url, Object.assign({}, init, { headers: headers(init && init.headers) }));
    if (resp.status !== 401) return resp;
    const err = await readError(resp);
    await askKey(attempt > 0 || sessionStorage.getItem(API_KEY) ? "That key was refused: " + err.message : null);
  }
  throw new ApiError(401, { error: { message: "no valid API key" } });
}

function askKey(problem) {
  return new Promise((resolve) => {
    const dlg = $("key-dialog");
    const msg = $("key-error");
    msg.hidden = !problem;
    msg.textContent = problem || "";
    $("key-input").value = "";
    const done = (ev) => {
      ev.preventDefault();
      const key = $("key-input").value.trim();
      if (!key) return;
      sessionStorage.setItem(API_KEY, key);
      $("key-form").removeEventListener("submit", done);
      dlg.close();
      resolve();
    };
    $("key-form").addEventListener("submit", done);
    if (!dlg.open) dlg.showModal();
    $("key-input").focus();
  });
}

// "node llm could not be reached at ..." -> "The llm service is not answering."
function explain(err) {
  if (err.name === "AbortError") return null;
  const m = /^node (\S+) (could not be reached|did not answer|answered (\d+)|failed)/.exec(err.message || "");
  if (m) {
    // "llm/MicroService" -> "llm"; "guardrail_in" -> "guardrail".
    const node = m[1].split("/")[0].replace(/_(in|out)$/, "");
    if (m[3]) return "The " + node + " service answered with an error (HTTP " + m[3] + ").";
    return "The " + node + " service is not answering.";
  }
  if (err.status === 429) return "ChatQnA is busy (too many requests at once); try again in a moment.";
  if (err.status === 413) return "That is too large for ChatQnA: " + err.message;
  if (err.status && err.param) return "The request was refused (" + err.param + "): " + err.message;
  if (err.status === 400 || err.status === 422) return "The request was refused: " + err.message;
  if (err.status) return "ChatQnA answered HTTP " + err.status + ": " + err.message;
  return "ChatQnA could not be reached: " + err.message;
}

function showError(err) {
  const text = typeof err === "string" ? err : explain(err);
  const box = $("error");
  if (!text) { box.hidden = true; return; }
  box.textContent = "";
  box.append(document.createTextNode(text));
  if (typeof err !== "string" && err.message && err.message !== text) {
    const d = document.createElement("details");
    const s = document.createElement("summary");
    s.textContent = "details";
    const p = document.createElement("p");
    p.textContent = err.message;
    d.append(s, p);
    box.append(d);
  }
  box.hidden = false;
}

function clearError() { $("error").hidden = true; }

// ---------- safe markdown ----------

// Block structure: fenced code, headings, lists, quotes, paragraphs. Inline: code, bold,
// italics, http(s) links. Everything else is text.
function renderMarkdown(src, into) {
  into.textContent = "";
  const lines = src.replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  let para = [];
  const flush = () => {
    if (para.length) {
      const p = document.createElement("p");
      inline(para.join("\n"), p);
      into.append(p);
      para = [];
    }
  };
  while (i < lines.length) {
    const line = lines[i];
    const fence = /^\s*(```|~~~)\s*([\w+-]*)\s*$/.exec(line);
    if (fence) {
      flush();
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i++;
      const pre = document.createElement("pre");
      const code = document.createElement("code");
      if (fence[2]) code.dataset.lang = fence[2];
      code.textContent = body.join("\n");
      pre.append(code);
      into.append(pre);
      continue;
    }
    const h = /^(#{1,6})\s+(.*)$/.exec(line);
    if (h) {
      flush();
      const el = document.createElement("h" + Math.min(6, h[1].length + 2));
      inline(h[2], el);
      into.append(el);
      i++;
      continue;
    }
    const item = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(line);
    if (item) {
      flush();
      const ordered = /\d/.test(item[1]);
      const list = document.createElement(ordered ? "ol" : "ul");
      while (i < lines.length) {
        const m = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(lines[i]);
        if (!m || /\d/.test(m[1]) !== ordered) break;
        const li = document.createElement("li");
        inline(m[2], li);
        list.append(li);
        i++;
      }
      into.append(list);
      continue;
    }
    if (/^\s*>\s?/.test(line)) {
      flush();
      const q = [];
      while (i < lines.length && /^\s*>\s?/.test(lines[i])) q.push(lines[i++].replace(/^\s*>\s?/, ""));
      const bq = document.createElement("blockquote");
      inline(q.join("\n"), bq);
      into.append(bq);
      continue;
    }
    if (!line.trim()) { flush(); i++; continue; }
    para.push(line);
    i++;
  }
  flush();
}

// Emphasis as CommonMark has it for the common cases: `**x**` anywhere, `__x__` and `*x*` only
// between word boundaries (so `__init__`-like names inside words stay text).
const INLINE = /(`+)([^`]|[^`][\s\S]*?[^`])\1|\*\*([^*\n]+)\*\*|(?<![\w])__([^_\n]+)__(?![\w])|(?<![\w*])\*([^*\s][^*\n]*)\*(?![\w*])|\[([^\]\n]+)\]\(([^)\s]+)\)/g;

function inline(text, into) {
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) into.append(textWithBreaks(text.slice(last, m.index)));
    let el;
    if (m[1]) { el = document.createElement("code"); el.textContent = m[2]; }
    else if (m[3] || m[4]) { el = document.createElement("strong"); el.textContent = m[3] || m[4]; }
    else if (m[5]) { el = document.createElement("em"); el.textContent = m[5]; }
    else {
      let url = null;
      try { url = new URL(m[7], location.href); } catch (_) { url = null; }
      if (url && (url.protocol === "http:" || url.protocol === "https:")) {
        el = document.createElement("a");
        el.href = url.href;
        el.rel = "noopener noreferrer nofollow";
        el.target = "_blank";
        el.textContent = m[6];
      } else {
        el = document.createTextNode(m[0]);
      }
    }
    into.append(el);
    last = m.index + m[0].length;
  }
  if (last < text.length) into.append(textWithBreaks(text.slice(last)));
}

function textWithBreaks(t) {
  const frag = document.createDocumentFragment();
  t.split("\n").forEach((part, k) => {
    if (k) frag.append(document.createElement("br"));
    frag.append(document.createTextNode(part));
  });
  return frag;
}

// ---------- the conversation ----------

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function addUser(text) {
  const li = el("li", "msg user");
  li.append(el("div", "who", "You"), el("div", "body", text));
  $("messages").append(li);
  $("empty").hidden = true;
  li.scrollIntoView({ block: "end" });
}

function addAssistant() {
  const li = el("li", "msg assistant");
  const body = el("div", "body markdown");
  const sources = el("div", "sources");
  const tools = el("div", "tools");
  li.append(el("div", "who", "ChatQnA"), body, sources, tools);
  li.setAttribute("aria-busy", "true");
  $("messages").append(li);
  $("empty").hidden = true;
  return { li, body, sources, tools, text: "" };
}

function showSources(view, list) {
  view.sources.textContent = "";
  if (!list || !list.length) return;
  const d = el("details", "source-list");
  const s = el("summary", null, "Sources (" + list.length + ")");
  d.append(s);
  const ol = el("ol");
  for (const src of list) {
    const li = el("li", "source");
    const head = el("div", "source-head");
    head.append(el("span", "source-file", src.source || "(unnamed)"));
    if (typeof src.score === "number") head.append(el("span", "source-score", "score " + src.score.toFixed(3)));
    li.append(head, el("blockquote", "source-text", src.text || ""));
    ol.append(li);
  }
  d.append(ol);
  view.sources.append(d);
}

function finishAssistant(view, note) {
  view.li.removeAttribute("aria-busy");
  if (note) view.body.append(el("p", "note", note));
  view.tools.textContent = "";
  const copy = el("button", "small", "Copy");
  copy.type = "button";
  copy.title = "Copy the answer";
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(view.text);
    } catch (_) {
      const t = el("textarea");
      t.value = view.text;
      document.body.append(t);
      t.select();
      document.execCommand("copy");
      t.remove();
    }
    copy.textContent = "Copied";
    setTimeout(() => { copy.textContent = "Copy"; }, 1500);
  });
  view.tools.append(copy);
  const last = $("messages").lastElementChild === view.li;
  if (last) {
    const again = el("button", "small", "Regenerate");
    again.type = "button";
    again.id = "regenerate";
    again.addEventListener("click", regenerate);
    view.tools.append(again);
  }
}

function settings() {
  const d = state.config.defaults;
  let saved = {};
  try { saved = JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}"); } catch (_) { saved = {}; }
  return Object.assign({ k: d.k, top_n: d.top_n, temperature: d.temperature, max_tokens: d.max_tokens, rerank: true, opea: false }, saved);
}

function body(question) {
  const s = settings();
  const b = {
    messages: state.history.concat([{ role: "user", content: question }]),
    stream: true,
    return_sources: true,
    k: Number(s.k),
    temperature: Number(s.temperature),
    max_tokens: Number(s.max_tokens),
  };
  if (state.config.rerank) { b.top_n = Number(s.top_n); b.rerank = !!s.rerank; }
  return { body: b, opea: !!s.opea };
}

// Python's bytes repr (OPEA's `data: b'...'` frames) to bytes.
function pyBytes(repr) {
  const m = /^b(['"])([\s\S]*)\1$/.exec(repr.trim());
  if (!m) return new TextEncoder().encode(repr);
  const s = m[2];
  const out = [];
  const simple = { n: 10, r: 13, t: 9, "\\": 92, "'": 39, '"': 34, "0": 0 };
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === "\\" && i + 1 < s.length) {
      const n = s[i + 1];
      if (n === "x" && i + 3 < s.length) { out.push(parseInt(s.slice(i + 2, i + 4), 16)); i += 3; continue; }
      if (n in simple) { out.push(simple[n]); i += 1; continue; }
    }
    for (const b of new TextEncoder().encode(c)) out.push(b);
  }
  return new Uint8Array(out);
}

async function ask(question, view) {
  const { body: b, opea } = body(question);
  state.controller = new AbortController();
  setBusy(true);
  clearError();
  let stopped = false;
  let failed = null;
  let finish = null;
  const utf8 = new TextDecoder();
  let frame = 0;
  const paint = () => {
    if (frame) return;
    frame = requestAnimationFrame(() => { frame = 0; renderMarkdown(view.text, view.body); });
  };
  try {
    const resp = await call(opea ? "/v1/chatqna" : "/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(b),
      signal: state.controller.signal,
    });
    if (!resp.ok) throw await readError(resp);
    const reader = resp.body.getReader();
    const text = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += text.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (!data.length) continue; // a keep-alive comment
        const payload = data.join("\n");
        if (payload === "[DONE]") continue;
        if (event === "sources") {
          try { showSources(view, JSON.parse(payload).sources); } catch (_) { /* ignore */ }
          continue;
        }
        if (payload.startsWith("{")) {
          const j = JSON.parse(payload);
          if (j.error) { failed = new ApiError(0, j); continue; }
          const c = j.choices && j.choices[0];
          if (c && c.delta && typeof c.delta.content === "string") view.text += c.delta.content;
          else if (c && typeof c.text === "string") view.text += c.text;
          if (c && c.finish_reason) finish = c.finish_reason;
        } else {
          view.text += utf8.decode(pyBytes(payload), { stream: true });
        }
        paint();
      }
    }
  } catch (e) {
    if (e.name === "AbortError") stopped = true;
    else failed = e;
  } finally {
    if (frame) cancelAnimationFrame(frame);
    frame = 0;
    renderMarkdown(view.text, view.body);
    state.controller = null;
    setBusy(false);
  }
  if (failed) showError(failed);
  const note = stopped ? "Stopped." : failed ? "No answer: see the message below." : finish === "length" ? "Cut at the max tokens setting." : null;
  finishAssistant(view, note);
  if (view.text) {
    state.history.push({ role: "user", content: question }, { role: "assistant", content: view.text });
  }
  return view;
}

function setBusy(busy) {
  state.busy = busy;
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  $("question").disabled = busy;
  document.body.classList.toggle("busy", busy);
  if (!busy) $("question").focus();
}

async function submit(ev) {
  if (ev) ev.preventDefault();
  if (state.busy) return;
  const q = $("question").value.trim();
  if (!q) return;
  $("question").value = "";
  const prev = $("regenerate");
  if (prev) prev.remove();
  addUser(q);
  await ask(q, addAssistant());
}

async function regenerate() {
  if (state.busy) return;
  const items = $("messages").children;
  const last = items[items.length - 1];
  const user = items[items.length - 2];
  if (!last || !user || !user.classList.contains("user")) return;
  const q = user.querySelector(".body").textContent;
  // Forget the last exchange; ask the same question again.
  if (state.history.length >= 2 && state.history[state.history.length - 2].content === q) state.history.splice(-2, 2);
  last.remove();
  await ask(q, addAssistant());
}

function newChat() {
  if (state.controller) state.controller.abort();
  state.history = [];
  $("messages").textContent = "";
  $("empty").hidden = false;
  clearError();
  $("question").focus();
}

// ---------- documents ----------

const ACCEPT = /\.(txt|md|markdown|html?|pdf|json|csv)$/i;

function uploadOne(file) {
  return new Promise((resolve) => {
    const row = el("div", "upload");
    const name = el("span", "upload-name", file.name);
    const bar = el("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", "Uploading " + file.name);
    const status = el("span", "upload-status", "");
    row.append(name, bar, status);
    $("uploads").append(row);
    if (!ACCEPT.test(file.name)) {
      status.textContent = "not a txt, md, html, pdf, json or csv file";
      row.classList.add("failed");
      bar.remove();
      return resolve(false);
    }
    const form = new FormData();
    form.append("files", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/dataprep/ingest");
    for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total); };
    xhr.upload.onload = () => { bar.removeAttribute("value"); status.textContent = "chunking and embedding…"; };
    xhr.onload = async () => {
      let j = null;
      try { j = JSON.parse(xhr.responseText); } catch (_) { j = null; }
      if (xhr.status === 401) {
        row.remove();
        await askKey(null);
        return resolve(await uploadOne(file));
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        bar.value = 100;
        const n = j && typeof j.chunks === "number" ? " (" + j.chunks + " chunk" + (j.chunks === 1 ? "" : "s") + ")" : "";
        status.textContent = "stored" + n;
        row.classList.add("done");
        setTimeout(() => row.remove(), 4000);
        resolve(true);
      } else {
        bar.remove();
        status.textContent = explain(new ApiError(xhr.status, j));
        row.classList.add("failed");
        resolve(false);
      }
    };
    xhr.onerror = () => {
      bar.remove();
      status.textContent = "ChatQnA could not be reached";
      row.classList.add("failed");
      resolve(false);
    };
    xhr.send(form);
  });
}

async function upload(files) {
  for (const f of files) await uploadOne(f);
  await listDocs();
}

async function addLink(ev) {
  ev.preventDefault();
  const url = $("link-input").value.trim();
  if (!url) return;
  const form = new FormData();
  form.append("link_list", JSON.stringify([url]));
  try {
    const resp = await call("/v1/dataprep/ingest", { method: "POST", body: form });
    if (!resp.ok) throw await readError(resp);
    $("link-input").value = "";
    await listDocs();
  } catch (e) {
    showError(e);
  }
}

async function listDocs() {
  const ul = $("doc-list");
  try {
    const resp = await call("/v1/dataprep/get", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
    if (!resp.ok) throw await readError(resp);
    const files = await resp.json();
    ul.textContent = "";
    for (const f of files) {
      const name = typeof f === "string" ? f : f.name || f.file_path || f.id;
      const li = el("li", "doc");
      const del = el("button", "small danger", "Delete");
      del.type = "button";
      del.setAttribute("aria-label", "Delete " + name);
      del.addEventListener("click", () => deleteDoc(name));
      li.append(el("span", "doc-name", name), del);
      ul.append(li);
    }
    if (!files.length) ul.append(el("li", "hint", "No documents yet."));
  } catch (e) {
    showError(e);
  }
}

async function deleteDoc(name) {
  if (name === "all" && !confirm("Delete every stored document?")) return;
  try {
    const resp = await call("/v1/dataprep/delete", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ file_path: name }),
    });
    if (!resp.ok) throw await readError(resp);
  } catch (e) {
    showError(e);
  }
  await listDocs();
}

// ---------- panels, settings, keys ----------

function toggle(panelId, buttonId, open) {
  const p = $(panelId);
  const show = open === undefined ? p.hidden : open;
  p.hidden = !show;
  $(buttonId).setAttribute("aria-expanded", String(show));
  if (show && panelId === "docs") listDocs();
  if (show) {
    const other = panelId === "docs" ? ["settings", "toggle-settings"] : ["docs", "toggle-docs"];
    if (window.matchMedia("(max-width: 760px)").matches) toggle(other[0], other[1], false);
  }
}

function loadSettings() {
  const s = settings();
  $("set-k").value = s.k;
  $("set-top-n").value = s.top_n;
  $("set-temperature").value = s.temperature;
  $("set-max-tokens").value = s.max_tokens;
  $("set-rerank").checked = !!s.rerank;
  $("set-opea").checked = !!s.opea;
  $("row-top-n").hidden = !state.config.rerank;
  $("row-rerank").hidden = !state.config.rerank;
}

function saveSettings() {
  const s = {
    k: $("set-k").value, top_n: $("set-top-n").value, temperature: $("set-temperature").value,
    max_tokens: $("set-max-tokens").value, rerank: $("set-rerank").checked, opea: $("set-opea").checked,
  };
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(s));
}

async function init() {
  try {
    const r = await fetch("/v1/ui/config");
    if (r.ok) state.config = await r.json();
  } catch (_) { /* keep the defaults */ }
  loadSettings();
  $("ask").addEventListener("submit", submit);
  $("question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) submit(e);
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.controller) state.controller.abort();
  });
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("new-chat").addEventListener("click", newChat);
  $("toggle-docs").addEventListener("click", () => toggle("docs", "toggle-docs"));
  $("toggle-settings").addEventListener("click", () => toggle("settings", "toggle-settings"));
  $("settings-form").addEventListener("change", saveSettings);
  $("reset-settings").addEventListener("click", () => { localStorage.removeItem(SETTINGS_KEY); loadSettings(); });
  $("file-input").addEventListener("change", (e) => { upload(Array.from(e.target.files)); e.target.value = ""; });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); upload(Array.from(e.dataTransfer.files)); });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file-input").click(); } });
  $("link-form").addEventListener("submit", addLink);
  $("refresh-docs").addEventListener("click", listDocs);
  $("delete-all").addEventListener("click", () => deleteDoc("all"));
  if (state.config.api_key_required && !sessionStorage.getItem(API_KEY)) await askKey(null);
  $("question").focus();
}

document.addEventListener("DOMContentLoaded", init);
