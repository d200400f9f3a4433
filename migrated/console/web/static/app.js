// migrate-console web UI: small progressive enhancement. Pages work without it; with it, the
// tasks list and task page refresh live (polling JSON), the login form sends the browser's time
// zone, and the create form shows only the fields of the chosen target type.
"use strict";

(function () {
  function setText(root, field, value) {
    root.querySelectorAll('[data-f="' + field + '"]').forEach(function (el) {
      if (el.tagName === "PROGRESS") { el.value = value; el.textContent = ""; }
      else if (el.textContent !== String(value)) { el.textContent = value; }
    });
  }

  function applyTask(root, t) {
    ["state_label", "stage", "rounds", "rounds_settings", "percent", "bytes", "rate", "eta", "message", "start_label"].forEach(function (f) {
      setText(root, f, t[f]);
    });
    setText(root, "fraction", t.fraction);
    root.dataset.state = t.state;
    root.querySelectorAll('[data-f="state_label"]').forEach(function (el) {
      el.className = "state state-" + t.state;
    });
    root.querySelectorAll('[data-f="message"]').forEach(function (el) {
      el.className = "msg msg-" + t.message_level;
    });
    root.querySelectorAll("[data-action]").forEach(function (el) {
      el.hidden = t.allowed.indexOf(el.dataset.action) < 0;
    });
    root.querySelectorAll('[data-f="start_label"]').forEach(function (b) {
      var name = b.closest("[data-actions]").dataset.name;
      b.setAttribute("aria-label", t.start_label + " task " + name);
    });
  }

  function cell(tr, text, code) {
    var td = document.createElement("td");
    if (code) { var c = document.createElement("code"); c.textContent = text; td.appendChild(c); }
    else { td.textContent = text; }
    tr.appendChild(td);
    return td;
  }

  function emptyRow(tbody, cols, text) {
    var tr = document.createElement("tr");
    var td = cell(tr, text);
    td.colSpan = cols; td.className = "empty";
    tbody.replaceChildren(tr);
  }

  function renderDisks(tbody, disks) {
    if (!disks.length) { emptyRow(tbody, 6, "No progress reported yet."); return; }
    var rows = disks.map(function (d) {
      var tr = document.createElement("tr");
      cell(tr, d.name, true); cell(tr, d.target, true); cell(tr, d.size); cell(tr, d.done);
      var td = cell(tr, "");
      var p = document.createElement("progress"); p.max = 1; p.value = d.fraction;
      td.appendChild(p); td.appendChild(document.createTextNode(" " + d.percent));
      cell(tr, d.sent);
      return tr;
    });
    tbody.replaceChildren.apply(tbody, rows);
  }

  function renderEvents(tbody, events) {
    if (!events.length) { emptyRow(tbody, 3, "No events yet."); return; }
    var rows = events.slice().reverse().map(function (e) {
      var tr = document.createElement("tr");
      tr.className = "ev-" + e.level;
      cell(tr, e.time); cell(tr, e.level); cell(tr, e.message);
      return tr;
    });
    tbody.replaceChildren.apply(tbody, rows);
  }

  var reloading = false;
  async function refreshTbody(table) {
    // The set of rows changed (a task was created or deleted elsewhere): take the server's rows.
    if (reloading) return;
    reloading = true;
    try {
      var resp = await fetch(location.pathname + "?partial=1", { credentials: "same-origin" });
      if (!resp.ok) return;
      var doc = new DOMParser().parseFromString(await resp.text(), "text/html");
      var fresh = doc.getElementById(table.id);
      if (fresh) {
        table.tBodies[0].replaceWith(fresh.tBodies[0]);
        table.hidden = fresh.hidden;
        document.querySelectorAll("[data-empty]").forEach(function (p) { p.hidden = !table.hidden; });
      }
    } finally { reloading = false; }
  }

  function status(msg) {
    document.querySelectorAll("[data-live-status]").forEach(function (el) { el.textContent = msg; });
  }

  async function poll(el) {
    if (document.hidden) return;
    var resp;
    try {
      resp = await fetch(el.dataset.poll, { credentials: "same-origin", headers: { "Accept": "application/json" } });
    } catch (e) {
      status("Cannot reach the console; retrying…");
      return;
    }
    if (resp.status === 401) {
      location.assign("/ui/login?next=" + encodeURIComponent(location.pathname));
      return;
    }
    if (resp.status === 404 && el.id === "task") { status("This task no longer exists."); return; }
    if (!resp.ok) { status("The console answered " + resp.status + "; retrying…"); return; }
    var data = await resp.json();
    status("");
    if (el.id === "tasks") {
      var seen = {};
      var rows = el.querySelectorAll("tr[data-task-id]");
      data.tasks.forEach(function (t) { seen[t.id] = t; });
      var same = rows.length === data.tasks.length;
      rows.forEach(function (tr) {
        var t = seen[tr.dataset.taskId];
        if (t) applyTask(tr, t); else same = false;
      });
      if (!same) refreshTbody(el);
    } else if (el.id === "sources") {
      data.sources.forEach(function (s) {
        var tr = el.querySelector('tr[data-source-id="' + CSS.escape(s.id) + '"]');
        if (!tr) return;
        tr.className = s.online ? "online" : "offline";
        setText(tr, "status", s.status);
        setText(tr, "heartbeat", s.heartbeat);
        tr.querySelectorAll('[data-f="status"]').forEach(function (b) {
          b.className = "badge " + (s.online ? "badge-ok" : "badge-off");
        });
      });
    } else if (el.id === "task") {
      applyTask(el, data.task);
      setText(el, "image_id", data.image_id || "not created yet");
      var d = el.querySelector("[data-disks]");
      if (d) renderDisks(d, data.disks);
      var ev = el.querySelector("[data-events]");
      if (ev) renderEvents(ev, data.events);
    }
  }

  function startPolling() {
    document.querySelectorAll("[data-poll]").forEach(function (el) {
      var ms = parseInt(el.dataset.pollMs || "5000", 10);
      var busy = false;
      setInterval(async function () {
        if (busy) return;
        busy = true;
        try { await poll(el); } finally { busy = false; }
      }, ms);
    });
  }

  function targetTypeForm() {
    var form = document.querySelector("[data-target-form]");
    if (!form) return;
    function update() {
      var chosen = form.querySelector("[data-target-type]:checked");
      var type = chosen ? chosen.value : "image";
      form.querySelectorAll("[data-for-target]").forEach(function (block) {
        var on = block.dataset.forTarget === type;
        block.hidden = !on;
        block.querySelectorAll("input, textarea, select").forEach(function (i) { i.disabled = !on; });
      });
    }
    form.querySelectorAll("[data-target-type]").forEach(function (r) { r.addEventListener("change", update); });
    update();
    // the rounds and cutover options mean something only with "incremental sync until cutover"
    // (the cutover ones with "consistent finish" too; the round ones only with the former)
    var continuous = form.querySelector("#continuous");
    var finish = form.querySelector("#consistent_finish");
    function updateContinuous() {
      var rounds = continuous.checked, cutover = continuous.checked || (finish && finish.checked);
      form.querySelectorAll("[data-for-continuous]").forEach(function (block) { block.disabled = !cutover; });
      form.querySelectorAll("[data-for-rounds]").forEach(function (i) { i.disabled = !rounds; });
    }
    if (continuous) {
      continuous.addEventListener("change", updateContinuous);
      if (finish) { finish.addEventListener("change", updateContinuous); }
      updateContinuous();
    }
  }

  function timeZone() {
    var tz = "UTC";
    try { tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; } catch (e) { /* keep UTC */ }
    document.querySelectorAll("input[data-tz]").forEach(function (i) { i.value = tz; });
  }

  document.addEventListener("DOMContentLoaded", function () {
    timeZone();
    targetTypeForm();
    startPolling();
  });
})();
