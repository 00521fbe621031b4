// The campaign pages: the live funnel and throughput chart of one campaign, the live
// figures of the list, and the channel chain's order (drag and drop, or the arrows).
// Loaded only by those pages (data-scripts); the figures come over the tab's one stream
// (herald.js turns its "campaign" events into "herald:campaigns").
(function () {
  "use strict";
  var lang = document.body.dataset.lang === "en" ? "en-GB" : "uk-UA";
  var fmt = new Intl.NumberFormat(lang);
  var STEP = 10; // seconds per bucket, as dispatcher.outcomes.SERIES_STEP
  var chart = null;
  var series = null; // {at: [], sent: [], delivered: [], failed: []}, per STEP
  var previous = null;

  function statusChanged(el, status) {
    if (!el || el.dataset.status === status) return false;
    el.dataset.status = status;
    return true;
  }

  // -- One campaign's page ---------------------------------------------------------------
  function perMinute(values) { return values.map(function (v) { return v * 60 / STEP; }); }

  function drawChart(panel) {
    var box = document.getElementById("throughput");
    if (!box || !window.uPlot || !series) return;
    var data = [series.at, perMinute(series.sent), perMinute(series.delivered), perMinute(series.failed)];
    if (chart && chart.root.isConnected) { chart.setData(data); return; }
    box.innerHTML = "";
    // Times in the business time zone and the person's language (not uPlot's defaults).
    var timeFmt = new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit", second: "2-digit", timeZone: panel.dataset.tz || undefined });
    var at = function (v) { return v === null || v === undefined ? "" : timeFmt.format(new Date(v * 1000)); };
    chart = new window.uPlot({
      width: Math.max(320, box.clientWidth || 800),
      height: 220,
      scales: { x: { time: true } },
      axes: [
        { values: function (u, splits) { return splits.map(at); } },
        { label: panel.dataset.labelRate, size: 70, values: function (u, splits) { return splits.map(function (v) { return fmt.format(v); }); } }
      ],
      series: [
        { value: function (u, v) { return at(v); } },
        { label: panel.dataset.labelSent, stroke: "#1f5fae", width: 2 },
        { label: panel.dataset.labelDelivered, stroke: "#1c7c43", width: 2 },
        { label: panel.dataset.labelFailed, stroke: "#b42318", width: 2 }
      ]
    }, data, box);
  }

  function addToSeries(at, counters) {
    if (!series) return;
    var bucket = Math.floor(at / STEP) * STEP;
    var last = series.at.length ? series.at[series.at.length - 1] : null;
    if (last === null || bucket > last) {
      for (var t = last === null ? bucket : last + STEP; t <= bucket; t += STEP) {
        series.at.push(t); series.sent.push(0); series.delivered.push(0); series.failed.push(0);
      }
    }
    var i = series.at.length - 1;
    if (previous) {
      ["sent", "delivered", "failed"].forEach(function (k) {
        series[k][i] += Math.max(0, (counters[k] || 0) - (previous[k] || 0));
      });
    }
    previous = counters;
  }

  function showFunnel(panel, snapshot, at) {
    var counters = snapshot.counters || {};
    panel.querySelectorAll("[data-k]").forEach(function (cell) {
      var key = cell.dataset.k;
      var value = key === "audience" ? (snapshot.audience || 0) : (counters[key] || 0);
      cell.textContent = fmt.format(value);
    });
    var bar = document.getElementById("progress-bar");
    if (bar) { bar.max = Math.max(1, snapshot.audience || 1); bar.value = counters.sent || 0; }
    var updated = document.getElementById("funnel-updated");
    if (updated) updated.textContent = updated.dataset.label + " " + new Date(at * 1000).toLocaleTimeString(lang);
    addToSeries(at, counters);
    drawChart(panel);
    if (statusChanged(panel, snapshot.status)) htmx.trigger(document.body, "herald:campaign-status");
  }

  function initPanel(panel) {
    if (panel.dataset.ready) return;
    panel.dataset.ready = "1";
    chart = null; series = null; previous = null;
    fetch(panel.dataset.seriesUrl, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : []; })
      .then(function (points) {
        series = { at: [], sent: [], delivered: [], failed: [] };
        points.forEach(function (p) {
          series.at.push(p[0]); series.sent.push(p[1]); series.delivered.push(p[2]); series.failed.push(p[3]);
        });
        drawChart(panel);
      });
  }

  function onFigures(data) {
    var panel = document.getElementById("funnel-panel");
    if (panel) {
      initPanel(panel);
      var mine = data.c[panel.dataset.campaign];
      if (mine) showFunnel(panel, mine, data.t);
    }
    var changed = false;
    document.querySelectorAll("[data-campaign-row]").forEach(function (row) {
      var one = data.c[row.dataset.campaignRow];
      if (!one) return;
      var sent = row.querySelector("[data-live=sent]");
      if (sent) sent.textContent = fmt.format((one.counters || {}).sent || 0);
      var audience = row.querySelector("[data-live=audience]");
      if (audience && one.audience !== null) audience.textContent = fmt.format(one.audience);
      var tag = row.querySelector("[data-live-status]");
      if (tag && statusChanged(tag, one.status)) changed = true;
    });
    if (changed) htmx.trigger(document.body, "herald:campaign-status");
  }

  document.addEventListener("herald:campaigns", function (event) { onFigures(event.detail); });
  function settle() {
    var panel = document.getElementById("funnel-panel");
    if (panel) initPanel(panel);
    if (window.heraldCampaigns) onFigures(window.heraldCampaigns);
  }
  document.addEventListener("htmx:afterSettle", settle);
  settle();

  // The export (CSV or XLSX) follows the status chosen for the list.
  document.addEventListener("change", function (event) {
    var t = event.target;
    if (!(t instanceof HTMLSelectElement) || t.id !== "recipient-status") return;
    var field = document.querySelector('#recipients-export input[name="f.status"]');
    if (field) field.value = t.value;
  });

  // -- The channel chain: drag and drop, or the arrow buttons (keyboard). ----------------
  var dragged = null;
  document.addEventListener("dragstart", function (event) {
    var step = event.target instanceof HTMLElement && event.target.closest(".chain-step");
    if (!step) return;
    dragged = step;
    step.classList.add("dragging");
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", step.dataset.channel);
  });
  document.addEventListener("dragover", function (event) {
    var over = event.target instanceof HTMLElement && event.target.closest(".chain-step");
    if (!dragged || !over || over === dragged || over.parentNode !== dragged.parentNode) return;
    event.preventDefault();
    var box = over.getBoundingClientRect();
    var after = event.clientY > box.top + box.height / 2;
    over.parentNode.insertBefore(dragged, after ? over.nextSibling : over);
  });
  document.addEventListener("drop", function (event) { if (dragged) event.preventDefault(); });
  document.addEventListener("dragend", function () {
    if (dragged) dragged.classList.remove("dragging");
    dragged = null;
  });
  document.addEventListener("click", function (event) {
    var button = event.target instanceof HTMLElement && event.target.closest("[data-move]");
    if (!button) return;
    var step = button.closest(".chain-step");
    if (!step) return;
    if (button.dataset.move === "up" && step.previousElementSibling) {
      step.parentNode.insertBefore(step, step.previousElementSibling);
    } else if (button.dataset.move === "down" && step.nextElementSibling) {
      step.parentNode.insertBefore(step.nextElementSibling, step);
    }
    button.focus();
  });
})();
