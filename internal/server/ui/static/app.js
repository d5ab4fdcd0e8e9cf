// pipectl dashboard: the little JavaScript the pages use. Everything works without it.
"use strict";

// A page for a run still in the hands of workers refreshes itself: the server renders
// the page again and the new <main> replaces the old one, unless the user is typing.
(function () {
  var main = document.getElementById("main");
  if (!main || !main.dataset.refresh) return;
  var every = Math.max(1, parseInt(main.dataset.refresh, 10) || 2) * 1000;
  function tick() {
    var a = document.activeElement;
    if (a && (a.tagName === "INPUT" || a.tagName === "TEXTAREA" || a.tagName === "SELECT")) {
      setTimeout(tick, every);
      return;
    }
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
      .then(function (html) {
        var next = new DOMParser().parseFromString(html, "text/html").getElementById("main");
        if (!next) return;
        main.replaceChildren.apply(main, Array.prototype.slice.call(next.childNodes));
        if (next.dataset.refresh) setTimeout(tick, every);
        else delete main.dataset.refresh;
      })
      .catch(function () { setTimeout(tick, every * 2); });
  }
  setTimeout(tick, every);
})();
