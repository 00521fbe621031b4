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
    // The SSE extension's swaps carry no detail.target, only detail.elt (the swapped element).
    var el = event.detail.target || event.detail.elt;
    if (!el || !el.id) return;
    if (el.id === "live-ready") {
      readyCount += 1;
      liveState(true);
      if (readyCount > 1) resync(); // a lost stream: events sent meanwhile are gone
    } else if (el.id === "live-cases") {
      var text = el.textContent.trim();
      if (text === "resync") { resync(); return; }
      // Lists (queue, tasks, wallboard) follow every change. A case page does not reload its
      // body on its own case's change: that would wipe the message its action just showed
      // (its own actions re-render it; a resync still reloads it).
      htmx.trigger(document.body, "herald:cases");
    } else if (el.id === "live-agents") {
      htmx.trigger(document.body, "herald:agents"); // presence or load: the wallboard
    }
  });

  // -- Campaign figures (event "campaign"): handed to the page as "herald:campaigns". -----
  document.addEventListener("htmx:sseMessage", function (event) {
    if (!event.target || event.target.id !== "live-campaigns") return;
    try { window.heraldCampaigns = JSON.parse(event.detail.data); } catch (e) { return; }
    document.dispatchEvent(new CustomEvent("herald:campaigns", { detail: window.heraldCampaigns }));
  });

  // -- Scripts only some pages need (data-scripts, data-styles), loaded once, in order. ---
  var loaded = {};
  function loadPageScripts() {
    document.querySelectorAll("[data-scripts], [data-styles]").forEach(function (el) {
      (el.dataset.styles || "").split(" ").filter(Boolean).forEach(function (href) {
        if (loaded[href]) return;
        loaded[href] = true;
        var link = document.createElement("link");
        link.rel = "stylesheet"; link.href = href;
        document.head.appendChild(link);
      });
      (el.dataset.scripts || "").split(" ").filter(Boolean).forEach(function (src) {
        if (loaded[src]) return;
        loaded[src] = true;
        var script = document.createElement("script");
        script.src = src; script.async = false;
        document.head.appendChild(script);
      });
    });
  }
  document.addEventListener("DOMContentLoaded", loadPageScripts);
  document.addEventListener("htmx:afterSettle", loadPageScripts);

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
    document.querySelectorAll("nav.menu details.menu-group").forEach(function (group) {
      group.classList.toggle("active", !!(best && group.contains(best)));
      group.open = false;
    });
  }
  document.addEventListener("htmx:pushedIntoHistory", markMenu);
  window.addEventListener("popstate", markMenu);

  // -- Small things: closing the call panel; a menu drop-down closes on a click elsewhere. -
  document.addEventListener("click", function (event) {
    var t = event.target;
    document.querySelectorAll("nav.menu details.menu-group[open]").forEach(function (group) {
      if (!group.contains(t) || (t instanceof Element && t.closest(".menu-drop a"))) group.open = false;
    });
    if (!(t instanceof HTMLElement)) return;
    if (t.matches("input[data-tick-all]")) { // tick every row of the table
      var table = t.closest("table");
      if (table) table.querySelectorAll("input[name='" + t.dataset.tickAll + "']").forEach(function (box) { box.checked = t.checked; });
    }
    var dismiss = t.closest("[data-dismiss]");
    if (dismiss) {
      var box = document.getElementById(dismiss.dataset.dismiss);
      if (box) box.innerHTML = "";
    }
  });

  // -- The template constructor: a variable from the palette goes in at the cursor. -------
  var lastField = null;
  document.addEventListener("focusin", function (event) {
    var t = event.target;
    if (t instanceof HTMLElement && t.matches("[data-vars]")) lastField = t;
  });
  document.addEventListener("click", function (event) {
    var t = event.target;
    if (!(t instanceof HTMLElement)) return;
    var chip = t.closest("[data-insert]");
    if (!chip) return;
    var field = lastField && document.body.contains(lastField) ? lastField : document.querySelector("[data-vars]");
    if (!field) return;
    var text = "{{ " + chip.dataset.insert + " }}";
    var start = field.selectionStart == null ? field.value.length : field.selectionStart;
    var end = field.selectionEnd == null ? start : field.selectionEnd;
    field.value = field.value.slice(0, start) + text + field.value.slice(end);
    field.focus();
    field.setSelectionRange(start + text.length, start + text.length);
    field.dispatchEvent(new Event("input", { bubbles: true }));
  });

  // -- The segment builder: a condition tree (all / any / not, any depth) edited here and
  // posted as the API's JSON condition (hidden #condition-json); each change asks the
  // server for the count (the form's "herald:condition" trigger, debounced).
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "className") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }
  function option(value, text, selected) {
    var o = el("option", { value: value, text: text });
    if (selected) o.selected = true;
    return o;
  }
  function SegmentBuilder(root) {
    var data = JSON.parse(root.dataset.builder);
    var hidden = document.getElementById("condition-json");
    var form = root.closest("form");
    var attrs = {};
    data.attributes.forEach(function (a) { attrs[a.code] = a; });
    var words = data.words;
    var NO_VALUE = ["is_empty", "is_not_empty"];
    var DAYS = ["older_than_days", "within_last_days"];

    function fromApi(node) {
      if (!node || typeof node !== "object") return { group: "all", neg: false, items: [] };
      if (node.all || node.any) {
        var kind = node.all ? "all" : "any";
        return { group: kind, neg: false, items: node[kind].map(fromApi) };
      }
      if (node.not) { var inner = fromApi(node.not); inner.neg = !inner.neg; return inner; }
      return { attribute: node.attribute, op: node.op, value: node.value, channel: node.channel, topic: node.topic, neg: false };
    }
    function toApi(n) {
      var out;
      if (n.group) {
        out = {}; out[n.group] = n.items.map(toApi);
      } else {
        out = { attribute: n.attribute, op: n.op };
        if (NO_VALUE.indexOf(n.op) < 0) out.value = n.value === undefined ? null : n.value;
        if (n.channel) out.channel = n.channel;
        if (n.topic) out.topic = n.topic;
      }
      return n.neg ? { not: out } : out;
    }
    var initial = {};
    try { initial = hidden.value ? JSON.parse(hidden.value) : {}; } catch (e) { initial = {}; }
    var model = fromApi(initial);
    if (!model.group) model = { group: "all", neg: false, items: [model] };

    function changed() {
      hidden.value = JSON.stringify(toApi(model));
      htmx.trigger(form, "herald:condition");
    }
    function newLeaf() {
      var a = data.attributes[0];
      var leaf = { attribute: a.code, op: a.operators[0], value: null, neg: false };
      resetValue(leaf);
      return leaf;
    }
    function resetValue(leaf) {
      var a = attrs[leaf.attribute];
      if (a.operators.indexOf(leaf.op) < 0) leaf.op = a.operators[0];
      leaf.value = null;
      if (leaf.op === "between") leaf.value = [null, null];
      else if (DAYS.indexOf(leaf.op) >= 0) leaf.value = 30;
      else if ((leaf.op === "in" || leaf.op === "not_in")) leaf.value = [];
      else if (a.type === "boolean") leaf.value = true;
      else if (a.values && a.values.length) leaf.value = a.values[0];
      (a.qualifiers || []).forEach(function (q) { if (!leaf[q.name]) leaf[q.name] = q.values[0]; });
      if (!(a.qualifiers || []).length) { delete leaf.channel; delete leaf.topic; }
    }
    function typed(a, text) {
      if (text === "" || text === null) return null;
      if (a.type === "number") { var n = Number(String(text).replace(",", ".")); return isNaN(n) ? text : n; }
      if (a.type === "boolean") return text === "true";
      return text;
    }
    function negBox(n) {
      var box = el("input", { type: "checkbox", "data-role": "not" });
      box.checked = !!n.neg;
      box.addEventListener("change", function () { n.neg = box.checked; render(); changed(); });
      return el("label", { className: "check" }, [box, document.createTextNode(" " + words.not)]);
    }
    function valueEditor(leaf) {
      var a = attrs[leaf.attribute];
      var op = leaf.op;
      if (NO_VALUE.indexOf(op) >= 0) return null;
      var inputType = a.type === "number" ? "number" : a.type === "date" ? "date" : "text";
      if (DAYS.indexOf(op) >= 0) {
        var days = el("input", { type: "number", min: "0", step: "1", "data-role": "days", value: leaf.value == null ? "" : leaf.value });
        days.addEventListener("input", function () { leaf.value = days.value === "" ? null : parseInt(days.value, 10); changed(); });
        return el("span", {}, [days, document.createTextNode(" " + words.days)]);
      }
      if (op === "between") {
        var pair = Array.isArray(leaf.value) ? leaf.value : [null, null];
        leaf.value = pair;
        var low = el("input", { type: inputType, "data-role": "low", value: pair[0] == null ? "" : pair[0], step: "any" });
        var high = el("input", { type: inputType, "data-role": "high", value: pair[1] == null ? "" : pair[1], step: "any" });
        low.addEventListener("input", function () { pair[0] = typed(a, low.value); changed(); });
        high.addEventListener("input", function () { pair[1] = typed(a, high.value); changed(); });
        return el("span", {}, [document.createTextNode(words.from + " "), low, document.createTextNode(" " + words.to + " "), high]);
      }
      var many = op === "in" || op === "not_in";
      if (a.values && a.values.length && (a.type === "enum" || a.type === "string")) {
        var sel = el("select", { "data-role": "value" });
        if (many) { sel.multiple = true; sel.size = Math.min(5, a.values.length); }
        var chosen = many ? (leaf.value || []) : [leaf.value];
        a.values.forEach(function (v) {
          var name = data.value_names[v];
          sel.appendChild(option(v, name ? v + " · " + name : v, chosen.indexOf(v) >= 0));
        });
        sel.addEventListener("change", function () {
          var picked = Array.prototype.filter.call(sel.options, function (o) { return o.selected; }).map(function (o) { return o.value; });
          leaf.value = many ? picked : picked[0];
          changed();
        });
        return sel;
      }
      if (a.type === "boolean") {
        var yn = el("select", { "data-role": "value" }, [option("true", words.yes, leaf.value !== false), option("false", words.no, leaf.value === false)]);
        yn.addEventListener("change", function () { leaf.value = yn.value === "true"; changed(); });
        return yn;
      }
      if (many) {
        var list = el("input", { type: "text", "data-role": "value", placeholder: words.comma, value: (leaf.value || []).join(", ") });
        list.addEventListener("input", function () {
          leaf.value = list.value.split(",").map(function (x) { return x.trim(); }).filter(function (x) { return x; }).map(function (x) { return typed(a, x); });
          changed();
        });
        return list;
      }
      var one = el("input", { type: op === "contains" ? "text" : inputType, "data-role": "value", step: "any", value: leaf.value == null ? "" : leaf.value });
      one.addEventListener("input", function () { leaf.value = typed(a, one.value); changed(); });
      return one;
    }
    function leafNode(leaf, parent) {
      var a = attrs[leaf.attribute];
      var pick = el("select", { "data-role": "attribute" });
      var groups = {};
      data.attributes.forEach(function (x) {
        if (!groups[x.group]) { groups[x.group] = el("optgroup", { label: x.group }); pick.appendChild(groups[x.group]); }
        groups[x.group].appendChild(option(x.code, x.label, x.code === leaf.attribute));
      });
      pick.addEventListener("change", function () { leaf.attribute = pick.value; resetValue(leaf); render(); changed(); });
      var ops = el("select", { "data-role": "op" });
      a.operators.forEach(function (o) { ops.appendChild(option(o, data.operators[o] || o, o === leaf.op)); });
      ops.addEventListener("change", function () { leaf.op = ops.value; resetValue(leaf); render(); changed(); });
      var parts = [negBox(leaf), pick];
      (a.qualifiers || []).forEach(function (q) {
        var qs = el("select", { "data-role": q.name, title: words[q.name] || q.name });
        q.values.forEach(function (v) { qs.appendChild(option(v, v, leaf[q.name] === v)); });
        qs.addEventListener("change", function () { leaf[q.name] = qs.value; changed(); });
        parts.push(qs);
      });
      parts.push(ops, valueEditor(leaf));
      var remove = el("button", { type: "button", className: "small danger", "data-role": "remove", text: words.remove });
      remove.addEventListener("click", function () { parent.items.splice(parent.items.indexOf(leaf), 1); render(); changed(); });
      parts.push(remove);
      return el("div", { className: "seg-leaf" + (leaf.neg ? " negated" : "") }, parts);
    }
    function groupNode(group, parent) {
      var kind = el("select", { "data-role": "group" }, [option("all", words.all, group.group === "all"), option("any", words.any, group.group === "any")]);
      kind.addEventListener("change", function () { group.group = kind.value; changed(); });
      var addLeaf = el("button", { type: "button", className: "small", "data-role": "add-condition", text: words.add_condition });
      addLeaf.addEventListener("click", function () { group.items.push(newLeaf()); render(); changed(); });
      var addGroup = el("button", { type: "button", className: "small", "data-role": "add-group", text: words.add_group });
      addGroup.addEventListener("click", function () { group.items.push({ group: "any", neg: false, items: [newLeaf()] }); render(); changed(); });
      var head = [negBox(group), kind, addLeaf, addGroup];
      if (parent) {
        var remove = el("button", { type: "button", className: "small danger", "data-role": "remove", text: words.remove });
        remove.addEventListener("click", function () { parent.items.splice(parent.items.indexOf(group), 1); render(); changed(); });
        head.push(remove);
      }
      var body = el("div", { className: "seg-items" }, group.items.map(function (n) { return n.group ? groupNode(n, group) : leafNode(n, group); }));
      return el("div", { className: "seg-group" + (group.neg ? " negated" : "") }, [el("div", { className: "seg-head" }, head), body]);
    }
    function render() {
      root.innerHTML = "";
      root.appendChild(groupNode(model, null));
    }
    render();
    hidden.value = JSON.stringify(toApi(model));
  }
  function startBuilders() {
    document.querySelectorAll("#segment-builder[data-builder]").forEach(function (root) {
      if (root.dataset.started) return;
      root.dataset.started = "true";
      SegmentBuilder(root);
    });
  }
  document.addEventListener("DOMContentLoaded", startBuilders);
  document.addEventListener("htmx:afterSettle", startBuilders);

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
