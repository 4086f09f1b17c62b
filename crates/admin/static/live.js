// The Live page: rows from the page's event stream, newest on top, at most data-rows kept.
// Text is set with textContent only: the events are what strangers sent.
(function () {
  document.addEventListener("DOMContentLoaded", function () {
    var table = document.getElementById("live");
    if (!table || !window.EventSource) { return; }
    var rows = document.getElementById("live-rows");
    var status = document.getElementById("live-status");
    var button = document.getElementById("live-pause");
    var keep = parseInt(table.getAttribute("data-rows"), 10) || 200;
    var paused = false;
    var held = [];

    var cell = function (tr, text, cls) {
      var td = document.createElement("td");
      td.textContent = text;
      if (cls) { td.className = cls; }
      tr.appendChild(td);
      return td;
    };
    var draw = function (e) {
      var tr = document.createElement("tr");
      tr.id = "live-" + e.id;
      if (e.rejected) { tr.className = "rejected"; }
      cell(tr, (e.received_at || "").replace("T", " ").replace("Z", ""));
      cell(tr, e.application || e.application_id);
      var what = cell(tr, e.category + " / " + e.name);
      if (e.rejected) {
        var mark = document.createElement("span");
        mark.className = "badge";
        mark.textContent = " rejected: " + (e.reasons || []).join(", ");
        what.appendChild(mark);
      }
      cell(tr, e.session_id || "");
      cell(tr, e.data.length > 200 ? e.data.slice(0, 200) + "…" : e.data, "data");
      rows.insertBefore(tr, rows.firstChild);
      while (rows.children.length > keep) { rows.removeChild(rows.lastChild); }
    };
    var take = function (message) {
      var e;
      try { e = JSON.parse(message.data); } catch (_) { return; }
      if (paused) {
        held.push(e);
        if (held.length > keep) { held.shift(); }
        status.textContent = "paused, " + held.length + " waiting";
      } else {
        draw(e);
      }
    };

    var source = new EventSource(table.getAttribute("data-stream"));
    source.onopen = function () { status.textContent = "watching"; };
    source.onerror = function () {
      if (source.readyState !== EventSource.CLOSED) { status.textContent = "reconnecting…"; }
    };
    source.addEventListener("event", take);
    source.addEventListener("rejected", take);
    var end = function (why) {
      return function () {
        source.close();
        status.textContent = why;
      };
    };
    source.addEventListener("dropped", end("stopped: this page read too slowly; reload to watch again"));
    source.addEventListener("closed", end("stopped: the live source went away; reload to watch again"));

    button.addEventListener("click", function () {
      paused = !paused;
      button.textContent = paused ? "Resume" : "Pause";
      if (!paused) {
        held.forEach(draw);
        held = [];
        if (source.readyState !== EventSource.CLOSED) { status.textContent = "watching"; }
      } else {
        status.textContent = "paused";
      }
    });
  });
})();
