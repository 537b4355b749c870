"""The console's one page: tables filled from the server-sent event stream, no reload.

Plain HTML and a little JavaScript, no library: ``EventSource('/stream')`` gives the whole
state on every change (``state``) and each new audit-trail event (``event``). Actions go
to ``/api/action`` with the session's CSRF token in ``X-CSRF-Token``; signing in posts
the operator's bind DN and password to ``/api/login``. Element ids and classes
(``#apps``, ``tr[data-tag]``, ``td.host``, ...) are what the browser test reads.
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ndsclust console</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f2f2f2}
.up,.running{color:#070}.down,.failed,.error{color:#b00}.maintenance{color:#a60}
#msg{min-height:1.4em;font-weight:bold}#msg.bad{color:#b00}
#events{max-height:22em;overflow:auto;font:12px monospace}
#live{font-size:12px;color:#777}
</style></head><body>
<h1>ndsclust console <span id="live">connecting...</span></h1>
<div id="who">
 <form id="login">operator: <input id="bind_dn" placeholder="bind DN" size="40">
 <input id="password" type="password" placeholder="password">
 <button id="login-button" type="submit">sign in</button></form>
 <span id="signed-in" hidden>signed in as <b id="who-name"></b>
 <button id="logout" type="button">sign out</button></span>
</div>
<p id="msg"></p>
<h2>Servers</h2>
<table id="servers"><thead><tr><th>server</th><th>state</th><th>channels</th>
<th>resources</th><th>hosting</th><th>maintenance</th></tr></thead><tbody></tbody></table>
<h2>Applications</h2>
<table id="apps"><thead><tr><th>tag</th><th>host</th><th>state</th><th>request</th>
<th>primary</th><th>backups</th><th>last event</th><th>action</th></tr></thead>
<tbody></tbody></table>
<h2>Events</h2>
<ul id="events"></ul>
<script>
"use strict";
let csrf = null, servers = [];
const $ = (id) => document.getElementById(id);
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function say(text, bad) { $("msg").textContent = text; $("msg").className = bad ? "bad" : ""; }
function evText(e) { return e ? `${e.time} ${e.kind} ${e.server || ""} ${e.text || ""}` : "-"; }
async function call(path, body) {
  const headers = {"Content-Type": "application/json"};
  if (csrf) headers["X-CSRF-Token"] = csrf;
  const r = await fetch(path, {method: "POST", headers, body: JSON.stringify(body),
                               credentials: "same-origin"});
  let data = {};
  try { data = await r.json(); } catch (e) {}
  return [r.status, data];
}
async function act(body) {
  const [status, data] = await call("/api/action", body);
  if (status === 200) say("done: " + data.written);
  else say(`refused (${status}): ${data.error || ""}`, true);
}
function signedIn(who, token) {
  csrf = token;
  $("login").hidden = !!who; $("signed-in").hidden = !who;
  $("who-name").textContent = who || "";
}
$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const [status, data] = await call("/api/login",
      {bind_dn: $("bind_dn").value, password: $("password").value});
  $("password").value = "";
  if (status === 200) { signedIn(data.who, data.csrf); say("signed in as " + data.who); }
  else say(`sign-in refused (${status}): ${data.error || ""}`, true);
});
$("logout").addEventListener("click", async () => {
  await call("/api/logout", {}); signedIn(null, null); say("signed out");
});
// Rows are kept and their cells updated in place: a change (or a pulse) never resets
// what an operator is choosing in a row's controls.
function rowFor(body, key, attr, build) {
  let tr = body.querySelector(`tr[data-${attr}="${CSS.escape(key)}"]`);
  if (!tr) { tr = el("tr"); tr.dataset[attr] = key; build(tr); }
  body.append(tr);  // in the order of the list
  return tr;
}
function setCell(tr, cls, text, extra) {
  const td = tr.querySelector("td." + cls);
  if (td.textContent !== text) td.textContent = text;
  td.className = cls + (extra ? " " + extra : "");
}
function prune(body, attr, keep) {
  for (const tr of [...body.rows]) if (!keep.has(tr.dataset[attr])) tr.remove();
}
function renderServers(list) {
  const body = $("servers").tBodies[0];
  for (const s of list) {
    const tr = rowFor(body, s.name, "server", (tr) => {
      for (const c of ["name", "state", "channels", "resources", "hosting"]) tr.append(el("td", "", c));
      const td = el("td"), b = el("button", "", "toggle-maintenance");
      b.addEventListener("click", () => act({verb: "maintenance", server: s.name,
                                             mode: tr.dataset.state === "maintenance" ? "off" : "on"}));
      td.append(b); tr.append(td);
    });
    tr.dataset.state = s.state;
    const pulse = s.pulse ? `directory pulse ${s.pulse.age ?? "?"}s ago${s.pulse_fresh ? "" : " (stale)"}` : "no pulse";
    setCell(tr, "name", s.name);
    setCell(tr, "state", s.state, s.state);
    // The channels its peers' sentinels hear it on, as their liveness reports say
    // (``ndsclust servers --channels``), then the directory pulse as read here.
    const seen = (s.seen || []).length ? `heard on ${s.seen.join(", ")}` : "heard on no channel";
    const by = Object.entries(s.heard_by || {})
      .map(([peer, chans]) => `${peer}: ${chans.join("+") || "none"}`).join(", ");
    setCell(tr, "channels", `${seen}${by ? ` (${by})` : ""}; ${pulse}`);
    tr.querySelector("td.channels").title = `lan ${(s.addresses || []).join(", ") || "-"}`;
    setCell(tr, "resources", (s.resources || []).join(", ") || "-");
    setCell(tr, "hosting", (s.hosting || []).join(", ") || "-");
    const b = tr.querySelector("button.toggle-maintenance");
    b.textContent = s.state === "maintenance" ? "end maintenance" : "maintenance";
  }
  prune(body, "server", new Set(list.map((s) => s.name)));
}
function fillServers(select) {
  const want = servers.join(",");
  if (select.dataset.servers === want) return;
  const chosen = select.value;
  select.replaceChildren(...servers.map((n) => { const o = el("option", n); o.value = n; return o; }));
  if (servers.includes(chosen)) select.value = chosen;
  select.dataset.servers = want;
}
function renderApps(list) {
  const body = $("apps").tBodies[0];
  for (const a of list) {
    const tr = rowFor(body, a.tag, "tag", (tr) => {
      for (const c of ["tag", "host", "state", "request", "primary", "backups", "last-event"]) tr.append(el("td", "", c));
      const td = el("td", null, "action"), verb = el("select", null, "verb"), to = el("select", null, "to");
      for (const v of ["migrate", "load", "unload", "failback", "cleanup"]) {
        const o = el("option", v); o.value = v; verb.append(o);
      }
      const go = el("button", "do", "go");
      go.addEventListener("click", () => act({verb: verb.value, tag: a.tag,
                                              ...(verb.value === "migrate" ? {server: to.value} : {})}));
      td.append(verb, " to ", to, " ", go); tr.append(td);
    });
    const state = String(a.state || "");
    setCell(tr, "tag", a.tag);
    setCell(tr, "host", a.host || "-");
    setCell(tr, "state", state, state.split("(")[0]);
    setCell(tr, "request", a.request || "-");
    setCell(tr, "primary", a.primary);
    setCell(tr, "backups", (a.backups || []).join(", "));
    setCell(tr, "last-event", evText(a.last_event));
    fillServers(tr.querySelector("select.to"));
  }
  prune(body, "tag", new Set(list.map((a) => a.tag)));
}
function addEvent(e, first) {
  const li = el("li", `${e.time} ${e.kind} ${e.tag || "-"} ${e.server || "-"} ${e.text || ""}`);
  li.dataset.kind = e.kind;
  const ul = $("events");
  if (first) ul.prepend(li); else ul.append(li);
  while (ul.children.length > 200) ul.lastChild.remove();
}
let seenEvents = false;
function render(state) {
  servers = (state.servers || []).map((s) => s.name);
  renderServers(state.servers || []);
  renderApps(state.applications || []);
  if (!seenEvents) { for (const e of state.events || []) addEvent(e, false); seenEvents = true; }
  $("live").textContent = "live, updated " + new Date().toLocaleTimeString();
}
const source = new EventSource("/stream");
source.addEventListener("state", (m) => render(JSON.parse(m.data)));
source.addEventListener("event", (m) => addEvent(JSON.parse(m.data), true));
source.onerror = () => { $("live").textContent = "reconnecting..."; };
fetch("/api/session", {credentials: "same-origin"}).then(async (r) => {
  if (r.status === 200) { const d = await r.json(); signedIn(d.who, d.csrf); }
});
</script></body></html>
"""
