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
function renderServers(list) {
  const body = $("servers").tBodies[0]; body.replaceChildren();
  for (const s of list) {
    const tr = el("tr"); tr.dataset.server = s.name;
    tr.append(el("td", s.name, "name"), el("td", s.state, "state " + s.state));
    const pulse = s.pulse ? `directory pulse ${s.pulse.age || ""}${s.pulse_fresh ? "" : " (stale)"}` : "no pulse";
    tr.append(el("td", `lan ${(s.addresses || []).join(", ") || "-"}; ${pulse}`, "channels"));
    tr.append(el("td", (s.resources || []).join(", ") || "-"), el("td", (s.hosting || []).join(", ") || "-"));
    const td = el("td");
    const on = s.state === "maintenance";
    const b = el("button", on ? "end maintenance" : "maintenance", "maintenance");
    b.addEventListener("click", () => act({verb: "maintenance", server: s.name, mode: on ? "off" : "on"}));
    td.append(b); tr.append(td); body.append(tr);
  }
}
function renderApps(list) {
  const body = $("apps").tBodies[0]; body.replaceChildren();
  for (const a of list) {
    const tr = el("tr"); tr.dataset.tag = a.tag;
    const state = String(a.state || "");
    tr.append(el("td", a.tag, "tag"), el("td", a.host || "-", "host"),
              el("td", state, "state " + state.split("(")[0]), el("td", a.request || "-", "request"),
              el("td", a.primary, "primary"), el("td", (a.backups || []).join(", "), "backups"),
              el("td", evText(a.last_event), "last-event"));
    const td = el("td"), verb = el("select", null, "verb"), to = el("select", null, "to");
    for (const v of ["migrate", "load", "unload", "failback", "cleanup"]) {
      const o = el("option", v); o.value = v; verb.append(o);
    }
    for (const s of servers) { const o = el("option", s); o.value = s; to.append(o); }
    const go = el("button", "do", "go");
    go.addEventListener("click", () => act({verb: verb.value, tag: a.tag,
                                            ...(verb.value === "migrate" ? {server: to.value} : {})}));
    td.append(verb, " to ", to, " ", go); tr.append(td); body.append(tr);
  }
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
