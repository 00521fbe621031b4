// Herald's own script: keyboard search, SLA countdowns, the live stream's events.
// No inline scripts anywhere (the Content-Security-Policy forbids them).
(function () {
  "use strict";

  // -- Search: ↓/↑ move through the results, Enter opens the card, Esc goes back. ---------
  function results() {
    return Array.prototype.slice.call(document.querySelectorAll("#results a.result"));
  }
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (!(target instanceof HTMLElement)) return;
    var list;
    if (target.matches("input[data-results]") && event.key === "ArrowDown") {
      list = results();
      if (list.length) { event.preventDefault(); list[0].focus(); }
    } else if (target.matches("#results a.result")) {
      list = results();
      var i = list.indexOf(target);
      if (event.key === "ArrowDown" && i < list.length - 1) { event.preventDefault(); list[i + 1].focus(); }
      if (event.key === "ArrowUp") {
        event.preventDefault();
        if (i > 0) list[i - 1].focus(); else { var q = document.getElementById("q"); if (q) q.focus(); }
      }
      if (event.key === "Escape") { var box = document.getElementById("q"); if (box) box.focus(); }
    }
  });

  // -- SLA timers: business time left, as the server computed it on the SLA calendar. ----
  // The figure counts down only while the calendar is in working hours (data-running) and
  // stops at data-changes-at (the end of the working span); at that moment, or when the
  // next span starts, the part showing it is reloaded from the server, which says whether
  // the time runs again. On Hold and outside working hours the figure stands still.
  var seen = new WeakMap();
  function two(n) { return (n < 10 ? "0" : "") + n; }
  function format(seconds) {
    var sign = seconds < 0 ? "\u2212" : "";
    var s = Math.abs(Math.round(seconds));
    return sign + two(Math.floor(s / 3600)) + ":" + two(Math.floor((s % 3600) / 60)) + ":" + two(s % 60);
  }
  function refreshSla(el) {
    var body = el.closest("[data-case-id][hx-get]");
    if (body) htmx.trigger(body, "herald:case-changed");
    else htmx.trigger(document.body, "herald:cases");
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll(".sla[data-left]").forEach(function (el) {
      if (!seen.has(el)) seen.set(el, { server: Date.parse(el.dataset.serverNow), local: now, done: false });
      var base = seen.get(el);
      var serverNow = base.server + (now - base.local);
      var switchAt = el.dataset.changesAt ? Date.parse(el.dataset.changesAt) : Infinity;
      var left = Number(el.dataset.left);
      if (el.dataset.running === "true") left -= (Math.min(serverNow, switchAt) - base.server) / 1000;
      var out = el.querySelector("[data-countdown]");
      if (out) out.textContent = format(left);
      el.classList.toggle("sla-breached", left < 0);
      if (serverNow >= switchAt && !base.done) { base.done = true; refreshSla(el); }
    });
  }
  setInterval(tick, 1000);
  document.addEventListener("htmx:afterSettle", tick);
  document.addEventListener("DOMContentLoaded", tick);

  // -- The live stream: one per tab (see admin_api/ui/live.py). --------------------------
  var readyCount = 0;
  function liveState(on) {
    var el = document.getElementById("live-state");
    if (!el) return;
    el.classList.toggle("on", on);
    el.classList.toggle("lost", !on);
    el.title = on ? el.dataset.connected : el.dataset.lost;
  }
  function resync() {
    htmx.trigger(document.body, "herald:cases");
    htmx.trigger(document.body, "herald:timeline");
    document.querySelectorAll("[data-case-id][hx-get]").forEach(function (el) {
      htmx.trigger(el, "herald:case-changed");
    });
  }
  document.addEventListener("htmx:sseOpen", function () { liveState(true); });
  document.addEventListener("htmx:sseError", function () { liveState(false); });
  document.addEventListener("htmx:afterSwap", function (event) {
    var el = event.detail.target;
    if (!el || !el.id) return;
    if (el.id === "live-ready") {
      readyCount += 1;
      liveState(true);
      if (readyCount > 1) resync(); // a lost stream: events sent meanwhile are gone
    } else if (el.id === "live-cases") {
      var text = el.textContent.trim();
      if (text === "resync") { resync(); return; }
      var ids = text.split(/\s+/);
      document.querySelectorAll("[data-case-id][hx-get]").forEach(function (node) {
        if (ids.indexOf(node.dataset.caseId) >= 0) htmx.trigger(node, "herald:case-changed");
      });
      htmx.trigger(document.body, "herald:cases");
    }
  });

  // -- The menu marks the page shown (navigation swaps only <main>, not the top bar). -----
  function markMenu() {
    var best = null;
    document.querySelectorAll("nav.menu a").forEach(function (a) {
      var href = a.getAttribute("href");
      if (location.pathname.indexOf(href) === 0 && (!best || href.length > best.getAttribute("href").length)) best = a;
    });
    document.querySelectorAll("nav.menu a").forEach(function (a) {
      a.classList.toggle("active", a === best);
      if (a === best) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    });
  }
  document.addEventListener("htmx:pushedIntoHistory", markMenu);
  window.addEventListener("popstate", markMenu);

  // -- Small things: closing the call panel. ---------------------------------------------
  document.addEventListener("click", function (event) {
    var t = event.target;
    if (!(t instanceof HTMLElement)) return;
    var dismiss = t.closest("[data-dismiss]");
    if (dismiss) {
      var box = document.getElementById(dismiss.dataset.dismiss);
      if (box) box.innerHTML = "";
    }
  });

  // Alpine (CSP build: no expressions evaluated from strings, only registered components).
  document.addEventListener("alpine:init", function () {
    window.Alpine.data("chipGroup", function () {
      return {
        active: "0",
        pick: function () { this.active = this.$el.dataset.index; },
        chipClass: function () { return { active: this.$el.dataset.index === this.active }; }
      };
    });
  });
})();

/* Chart pages carry #chart-assets: uPlot and charts.js are loaded then (on a full load or
   after a boosted navigation), never on the first visit of other pages. */
(function () {
  function load() {
    var assets = document.getElementById("chart-assets");
    if (!assets || window.heraldChartsLoading) return;
    window.heraldChartsLoading = true;
    var css = document.createElement("link");
    css.rel = "stylesheet";
    css.href = assets.dataset.css;
    document.head.appendChild(css);
    var lib = document.createElement("script");
    lib.src = assets.dataset.uplot;
    lib.onload = function () {
      var charts = document.createElement("script");
      charts.src = assets.dataset.charts;
      document.head.appendChild(charts);
    };
    document.head.appendChild(lib);
  }
  document.addEventListener("htmx:afterSettle", load);
  document.addEventListener("DOMContentLoaded", load);
})();
