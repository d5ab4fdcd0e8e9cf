// pipectl dashboard: the little JavaScript the pages use. Every page works without it; with
// it, pages follow what happens without a reload.
"use strict";

(function () {
  var main = document.getElementById("main");
  if (!main) return;
  var stream = null, timer = null, busy = false, again = false;

  // typing is true while keyboard focus is inside the page (a field, a link, a button): the
  // page is not replaced under the user, who would lose their place.
  function typing() {
    var a = document.activeElement;
    return a && a !== document.body && main.contains(a);
  }

  // refresh renders the page again on the server and puts the new <main> in place.
  function refresh() {
    if (busy) { again = true; return; }
    if (typing()) { setTimeout(refresh, 1000); return; }
    busy = true;
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { if (!r.ok) throw new Error(String(r.status)); return r.text(); })
      .then(function (html) {
        var next = new DOMParser().parseFromString(html, "text/html").getElementById("main");
        if (!next) return;
        main.replaceChildren.apply(main, Array.prototype.slice.call(next.childNodes));
        if (next.dataset.events !== main.dataset.events) {
          if (next.dataset.events) main.dataset.events = next.dataset.events; else delete main.dataset.events;
          follow();
        }
      })
      .catch(function () { /* the next news or tick tries again */ })
      .then(function () { busy = false; if (again) { again = false; refresh(); } });
  }

  // follow listens to the run's event stream while the page names one.
  function follow() {
    if (stream) { stream.close(); stream = null; }
    var url = main.dataset.events;
    if (!url) return;
    if (!window.EventSource) { poll(2000); return; }
    if (timer) { clearInterval(timer); timer = null; }
    stream = new EventSource(url);
    stream.addEventListener("transition", refresh);
    stream.addEventListener("step", refresh);
    stream.addEventListener("runs", refresh);
    stream.addEventListener("end", function () { stream.close(); stream = null; refresh(); });
    // A refused stream (the server's bound on streams, or a lost session) is not retried by
    // the browser: fall back to asking every few seconds.
    stream.addEventListener("error", function () {
      if (stream && stream.readyState === EventSource.CLOSED) { stream = null; poll(5000); }
    });
  }

  function poll(every) {
    if (timer) return;
    timer = setInterval(refresh, every);
  }

  follow();
  if (main.dataset.refresh) poll(Math.max(1, parseInt(main.dataset.refresh, 10) || 3) * 1000);
})();
