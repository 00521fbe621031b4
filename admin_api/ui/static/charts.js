/* Herald's charts: uPlot drawn from the JSON of [data-chart] elements (no inline script).
   {"kind": "line" | "bar", "x": [unix seconds] | null, "labels": [category names],
    "series": [{"name": "...", "values": [...]}]}. Redrawn after every htmx swap. */
(function () {
  var COLORS = ["#2563eb", "#16a34a", "#dc2626", "#d97706", "#7c3aed", "#0891b2"];
  function draw(el) {
    if (el.dataset.drawn === el.dataset.chart) return;
    el.dataset.drawn = el.dataset.chart;
    el.textContent = "";
    var spec = JSON.parse(el.dataset.chart);
    var names = el.dataset.names ? JSON.parse(el.dataset.names) : {};
    var labels = spec.labels || [];
    var bars = spec.kind === "bar";
    var xs = bars || !spec.x ? labels.map(function (_, i) { return i; }) : spec.x;
    var data = [xs].concat(spec.series.map(function (s) { return s.values; }));
    var width = Math.max(el.clientWidth, 240);
    var timed = !bars && !!spec.x;
    var series = [{ label: (timed ? names.__time : names.__cat) || "" }].concat(spec.series.map(function (s, i) {
      var c = COLORS[i % COLORS.length];
      var one = { label: names[s.name] || s.name, stroke: c, width: 2, points: { show: xs.length < 40 } };
      if (bars) {
        one.fill = c + "cc";
        one.paths = uPlot.paths.bars({ size: [0.6 / spec.series.length, 60], align: 0, gap: 2 });
        one.points = { show: false };
      }
      return one;
    }));
    var opts = {
      width: width,
      height: parseInt(el.dataset.height || "240", 10),
      series: series,
      legend: { show: spec.series.length > 1 || !bars },
      scales: { x: { time: !bars && !!spec.x } },
      axes: [
        bars || !spec.x ? {
          values: function (u, ticks) { return ticks.map(function (t) { var l = labels[t]; return l === undefined ? "" : (names[l] || l); }); },
          splits: function () { return xs; },
          rotate: labels.length > 6 ? -30 : 0,
          size: labels.length > 6 ? 90 : 40
        } : {},
        { size: 56 }
      ]
    };
    if (bars) opts.scales.x = { time: false, range: function () { return [-0.5, xs.length - 0.5]; } };
    new uPlot(opts, data, el);
  }
  function all() { document.querySelectorAll("[data-chart]").forEach(draw); }
  document.addEventListener("htmx:afterSettle", all);
  if (document.readyState !== "loading") all();
  else document.addEventListener("DOMContentLoaded", all);
  var resized;
  window.addEventListener("resize", function () {
    clearTimeout(resized);
    resized = setTimeout(function () {
      document.querySelectorAll("[data-chart]").forEach(function (el) { el.dataset.drawn = ""; draw(el); });
    }, 200);
  });
})();
