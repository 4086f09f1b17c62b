/*
 * The Eye in a web page: a page view on load, a click on any element marked `data-eye`,
 * and whatever `eye.track(category, name, data)` is given, batched and sent with a
 * publishable key to POST /v1/browser/events.
 *
 *   <script src="https://eye.example/eye.js" data-key="PUBLISHABLE KEY" defer></script>
 *
 * data-key   the publishable key (required; `eye token create --publishable --origin ...`)
 * data-api   where to send, if not where this script came from (e.g. https://eye.example)
 *
 * The session id lives in sessionStorage (one per tab, gone when it closes). Events go as
 * text/plain, which needs no CORS preflight, every second or 20 at a time, and with
 * fetch(keepalive) or navigator.sendBeacon when the page is hidden or left.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || (window.eye && window.eye.track)) {
    return;
  }
  var key = script.getAttribute("data-key");
  if (!key) {
    console.warn("eye.js: no data-key on the script tag; nothing will be sent");
    return;
  }
  var base = script.getAttribute("data-api") || new URL(script.src, location.href).origin;
  var endpoint = base.replace(/\/+$/, "") + "/v1/browser/events";
  var BATCH = 20; // events a request; at most the per-address burst
  var HELD = 200; // events kept while the api cannot be reached
  var WAIT_MS = 1000;
  var TRIES = 3; // failed sends in a row before a batch is dropped
  var keepalive = !!window.fetch && !!window.Request && "keepalive" in Request.prototype;
  var queue = [];
  var timer = null;
  var failures = 0;

  function uuid() {
    if (window.crypto && crypto.randomUUID) {
      return crypto.randomUUID();
    }
    var b = new Uint8Array(16);
    crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) {
      return (x + 0x100).toString(16).slice(1);
    }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" +
      h.slice(16, 20) + "-" + h.slice(20);
  }

  var session = (function () {
    var name = "eye.session";
    try {
      var id = sessionStorage.getItem(name);
      if (!id) {
        id = uuid();
        sessionStorage.setItem(name, id);
      }
      return id;
    } catch (e) {
      return uuid(); // storage blocked: a session per page
    }
  })();

  function page() {
    // The port too, when not the scheme's: the host a Segment SDK's page url gives.
    return { host: location.host, path: location.pathname.slice(0, 2048) };
  }

  function track(category, name, data) {
    queue.push({
      id: uuid(), // a resend after a failure is then stored once
      session_id: session,
      category: String(category),
      name: String(name),
      data: data || {},
      timestamp: new Date().toISOString()
    });
    if (queue.length > HELD) {
      queue.splice(0, queue.length - HELD);
    }
    if (queue.length >= BATCH) {
      flush(false);
    } else if (timer === null) {
      timer = setTimeout(function () {
        flush(false);
      }, WAIT_MS);
    }
  }

  function flush(leaving) {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    while (queue.length > 0) {
      var batch = queue.splice(0, BATCH);
      send(batch, leaving);
      if (!leaving) {
        break; // the rest goes on the next tick
      }
    }
    if (queue.length > 0 && timer === null) {
      timer = setTimeout(function () {
        flush(false);
      }, WAIT_MS);
    }
  }

  // A cors-mode fetch always carries the page's Origin; a beacon is the fallback for a page
  // being left by a browser without keepalive.
  function send(batch, leaving) {
    var body = JSON.stringify({ key: key, events: batch });
    if (leaving && !keepalive && navigator.sendBeacon) {
      navigator.sendBeacon(endpoint, body);
      return;
    }
    if (!window.fetch) {
      return;
    }
    fetch(endpoint, {
      method: "POST",
      body: body,
      headers: { "Content-Type": "text/plain" },
      credentials: "omit",
      keepalive: true
    }).then(function (response) {
      if (response.status === 429 || response.status >= 500) {
        retry(batch);
        return;
      }
      failures = 0;
      if (!response.ok) {
        response.json().then(function (problem) {
          console.warn("eye.js: events refused (" + response.status + " " + problem.code +
            "): " + problem.detail);
        }, function () {});
      }
    }, function () {
      // The network, or an answer the page may not read (an origin the key does not list).
      if (!leaving) {
        retry(batch);
      }
    });
  }

  // Put back in front, to go with the next send; the oldest are dropped beyond HELD, and
  // the batch itself after TRIES failures in a row.
  function retry(batch) {
    failures += 1;
    if (failures >= TRIES) {
      failures = 0;
      console.warn("eye.js: " + batch.length + " events dropped after " + TRIES + " failed sends");
      return;
    }
    queue = batch.concat(queue).slice(-HELD);
    if (timer === null) {
      timer = setTimeout(function () {
        flush(false);
      }, WAIT_MS * 5);
    }
  }

  document.addEventListener("click", function (event) {
    var target = event.target;
    var marked = target && target.closest ? target.closest("[data-eye]") : null;
    if (!marked) {
      return;
    }
    var element = (marked.getAttribute("data-eye") || marked.textContent || marked.tagName)
      .trim().slice(0, 256) || marked.tagName.toLowerCase();
    var data = page();
    data.element = element;
    track("page interaction", "cta click", data);
  }, true);

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") {
      flush(true);
    }
  });
  window.addEventListener("pagehide", function () {
    flush(true);
  });

  window.eye = { track: track, flush: function () { flush(false); } };
  track("page interaction", "pageview", page());
})();
