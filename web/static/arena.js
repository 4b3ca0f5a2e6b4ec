// Arena's own script (no inline scripts: the Content-Security-Policy allows
// only files served from this origin). Live views: an element with
// data-live-events (an /api/v1/events URL) holds a [data-live-target] that
// htmx reloads (its hx-get fragment) whenever an event arrives, and
// each event is announced in the element's [data-live-log] list.
(function () {
  "use strict";
  // The target carries hx-get (its fragment's URL) and hx-trigger="arena:refresh".
  function refresh(el) {
    var target = el.querySelector("[data-live-target]");
    if (target && window.htmx) { window.htmx.trigger(target, "arena:refresh"); }
  }
  function follow(el) {
    var source = new EventSource(el.getAttribute("data-live-events"));
    var log = el.querySelector("[data-live-log]");
    var pending = null;
    source.onmessage = null;
    ["formed", "generated", "judged", "settled", "failed"].forEach(function (kind) {
      source.addEventListener(kind, function (event) {
        var data = {};
        try { data = JSON.parse(event.data); } catch (e) { return; }
        if (log) {
          var item = document.createElement("li");
          item.textContent = "match " + String(data.match_id || "").slice(0, 8) + " " + kind;
          log.insertBefore(item, log.firstChild);
          while (log.children.length > 8) { log.removeChild(log.lastChild); }
        }
        // At most one refresh per half second, however fast events come.
        if (!pending) { pending = setTimeout(function () { pending = null; refresh(el); }, 500); }
      });
    });
    el.setAttribute("data-live-state", "following");
  }
  // The playground streams an answer token by token: the form is POSTed
  // (the system prompt stays out of URLs) and the answer, Server-Sent
  // Events, is read from the response as it arrives.
  function playground(form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var out = document.getElementById(form.getAttribute("data-output"));
      var status = document.getElementById(form.getAttribute("data-status"));
      var params = new URLSearchParams();
      var withForm = document.getElementById(form.getAttribute("data-with") || "");
      [withForm, form].forEach(function (f) {
        if (!f) { return; }
        new FormData(f).forEach(function (value, key) {
          if (typeof value === "string") { params.set(key, value); }
        });
      });
      out.textContent = "";
      status.textContent = "Generating…";
      function handle(kind, data) {
        var d = {};
        try { d = JSON.parse(data); } catch (err) { return; }
        if (kind === "token") { out.textContent += d.text; }
        if (kind === "done") { status.textContent = "Done: " + (d.tokens || 0) + " tokens (" + (d.finish || "") + ")"; }
        if (kind === "problem") { status.textContent = "Error: " + (d.message || "the playground failed"); }
      }
      fetch(form.getAttribute("data-stream"), {
        method: "POST",
        body: params,
        credentials: "same-origin",
        headers: { "Content-Type": "application/x-www-form-urlencoded" }
      }).then(function (response) {
        if (!response.ok || !response.body) { throw new Error("status " + response.status); }
        var reader = response.body.getReader();
        var decoder = new TextDecoder();
        var buffer = "";
        function pump() {
          return reader.read().then(function (chunk) {
            if (chunk.done) {
              if (status.textContent === "Generating…") { status.textContent = "The connection closed."; }
              return;
            }
            buffer += decoder.decode(chunk.value, { stream: true });
            var cut;
            while ((cut = buffer.indexOf("\n\n")) >= 0) {
              var block = buffer.slice(0, cut);
              buffer = buffer.slice(cut + 2);
              var kind = "message", data = "";
              block.split("\n").forEach(function (line) {
                if (line.indexOf("event: ") === 0) { kind = line.slice(7); }
                if (line.indexOf("data: ") === 0) { data += line.slice(6); }
              });
              handle(kind, data);
            }
            return pump();
          });
        }
        return pump();
      }).catch(function () {
        status.textContent = "The connection closed.";
      });
    });
  }
  // A studio dry run: its progress as matches finish, then the report.
  function dryRun(el) {
    var source = new EventSource(el.getAttribute("data-dry-run-events"));
    var bar = document.getElementById("dr-progress");
    var count = document.getElementById("dr-count");
    source.addEventListener("progress", function (e) {
      var d = {};
      try { d = JSON.parse(e.data); } catch (err) { return; }
      bar.value = d.done; bar.max = d.total;
      count.textContent = d.done + " of " + d.total;
      var note = document.getElementById("dr-note");
      if (note && d.note) { note.textContent = d.note; }
    });
    source.addEventListener("done", function () { source.close(); window.location.reload(); });
    source.addEventListener("problem", function (e) {
      var d = {};
      try { d = JSON.parse(e.data); } catch (err) { /* ignore */ }
      var p = document.getElementById("dr-problem");
      p.textContent = "The dry run failed: " + (d.message || "unknown");
      p.hidden = false;
      source.close();
    });
  }
  // The studio editor: line numbers beside the text, and an error's
  // LINE:COL link puts the caret there.
  function codeEditor(area) {
    var gutter = document.getElementById("gutter");
    function number() {
      var lines = area.value.split("\n").length;
      var out = [];
      for (var i = 1; i <= lines; i++) { out.push(i); }
      gutter.textContent = out.join("\n");
      gutter.scrollTop = area.scrollTop;
    }
    area.addEventListener("input", number);
    // Forms that carry a copy of the draft send it as it stands.
    document.querySelectorAll("input[data-sync-from='" + area.id + "']").forEach(function (copy) {
      copy.form.addEventListener("submit", function () { copy.value = area.value; });
    });
    area.addEventListener("scroll", function () { gutter.scrollTop = area.scrollTop; });
    number();
    document.addEventListener("click", function (event) {
      var link = event.target.closest ? event.target.closest("a.where[data-line]") : null;
      if (!link) { return; }
      event.preventDefault();
      var line = parseInt(link.getAttribute("data-line"), 10) || 1;
      var column = parseInt(link.getAttribute("data-column"), 10) || 1;
      var lines = area.value.split("\n");
      var offset = 0;
      for (var i = 0; i < line - 1 && i < lines.length; i++) { offset += lines[i].length + 1; }
      offset += Math.min(column - 1, (lines[line - 1] || "").length);
      area.focus();
      area.setSelectionRange(offset, offset);
      var height = area.scrollHeight / Math.max(lines.length, 1);
      area.scrollTop = Math.max(0, (line - 5) * height);
    });
  }
  // A battle card: keys 1 to 5 press its vote buttons (not while typing);
  // after the vote, "n" opens the next battle and the reveal takes focus.
  function voteKeys() {
    document.addEventListener("keydown", function (event) {
      if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) { return; }
      var t = event.target;
      if (t && /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName)) { return; }
      var form = document.querySelector("form[data-vote-keys]");
      if (form) {
        var button = form.querySelector("button[data-key='" + event.key + "']");
        if (button && !button.disabled) {
          event.preventDefault();
          form.querySelectorAll("button").forEach(function (b) { b.disabled = b !== button; });
          button.click();
        }
        return;
      }
      var next = document.getElementById("next-battle");
      if (next && (event.key === "n" || event.key === "N")) { event.preventDefault(); next.click(); }
    });
    document.body.addEventListener("htmx:afterSwap", function (event) {
      var battle = document.getElementById("battle");
      if (battle && event.target === battle || (event.detail && event.detail.target && event.detail.target.id === "battle")) {
        var shown = document.getElementById("battle");
        if (shown) { shown.focus(); }
      }
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    if (document.querySelector("form[data-vote-keys]")) { voteKeys(); }
    var source = document.getElementById("source");
    if (source && document.getElementById("gutter")) { codeEditor(source); }
    document.querySelectorAll("[data-dry-run-events]").forEach(dryRun);
    document.querySelectorAll("[data-live-events]").forEach(follow);
    document.querySelectorAll("form[data-stream]").forEach(playground);
  });
})();
