// The rule designer (issue 15): the Alpine component building a case rule - when, if (an
// and/or/not tree kept as a flat list of rows with depths), then - and saving or
// dry-running it through /api/v1/case-rules. Loaded only by /ui/automation.
(function () {
  "use strict";

  var seq = 0;
  function nextId() { seq += 1; return seq; }

  function parse(el, name, fallback) {
    try { var v = JSON.parse(el.dataset[name] || "null"); return v === null ? fallback : v; }
    catch (e) { return fallback; }
  }

  function rowOf(kind, depth, field) {
    return { id: nextId(), kind: kind, depth: depth, field: field || "status", op: "eq", value: "", values: [], path: "" };
  }

  function actionOf(spec) {
    var a = {
      id: nextId(), type: spec.type, status: "", priority: "", category: "", group_code: "",
      user_id: "", tag: "", text: "", template_id: "", chain: "viber,sms", title: "", due_hours: 24, url: ""
    };
    Object.keys(spec).forEach(function (k) {
      if (k === "channel_chain") a.chain = spec[k].join(",");
      else if (k === "user_id" || k === "template_id") a[k] = String(spec[k]);
      else if (k !== "template_version") a[k] = spec[k];
    });
    return a;
  }

  function actionSpec(a) {
    switch (a.type) {
      case "set_status": return { type: a.type, status: a.status };
      case "set_priority": return { type: a.type, priority: a.priority };
      case "set_category": return { type: a.type, category: a.category };
      case "set_group": return { type: a.type, group_code: a.group_code };
      case "set_assignee": return { type: a.type, user_id: Number(a.user_id) };
      case "add_tag": return { type: a.type, tag: a.tag };
      case "add_note": case "notify_supervisors": return { type: a.type, text: a.text };
      case "send_message": return { type: a.type, template_id: Number(a.template_id), channel_chain: a.chain.split(",") };
      case "create_task": return { type: a.type, group_code: a.group_code, title: a.title, due_hours: Number(a.due_hours) };
      case "webhook": return { type: a.type, url: a.url };
      default: return { type: a.type };
    }
  }

  document.addEventListener("alpine:init", function () {
    window.Alpine.data("ruleEditor", function () {
      return {
        options: { triggers: [], changed: [], fields: [], ops: {}, groupKinds: [], actions: [] },
        texts: {},
        ruleId: null,
        position: 0,
        name: "",
        triggerType: "case_created",
        triggerFields: [],
        hours: "",
        at: "",
        isActive: false,
        stopProcessing: false,
        rows: [],
        actions: [],
        newAction: "",
        errors: {},
        general: "",
        savedNote: "",
        busy: false,
        caseNumber: "",
        dry: null,

        init: function () {
          var el = this.$el;
          this.options = parse(el, "options", this.options);
          this.texts = parse(el, "texts", {});
          var rule = parse(el, "rule", null);
          if (!rule) return;
          this.ruleId = rule.id;
          this.position = rule.position;
          this.name = rule.name;
          this.triggerType = rule.trigger.type;
          this.triggerFields = rule.trigger.fields || [];
          this.hours = rule.trigger.hours || "";
          this.at = rule.trigger.at || "";
          this.isActive = rule.is_active;
          this.stopProcessing = rule.stop_processing;
          var rows = [];
          (function walk(node, depth) {
            if (!node) return;
            if (node.kind === "cond") {
              var r = rowOf("cond", depth, node.field);
              r.op = node.op;
              if (Array.isArray(node.value)) r.values = node.value.slice();
              else r.value = node.value === null || node.value === undefined ? "" : String(node.value);
              rows.push(r);
              return;
            }
            rows.push(rowOf(node.kind, depth));
            if (node.kind === "not") walk(node.item, depth + 1);
            else node.items.forEach(function (n) { walk(n, depth + 1); });
          })(rule.condition, 0);
          this.rows = rows;
          this.actions = rule.actions.map(actionOf);
        },

        // -- the condition tree ------------------------------------------------------------
        fieldOf: function (row) {
          for (var i = 0; i < this.options.fields.length; i++) {
            if (this.options.fields[i].value === row.field) return this.options.fields[i];
          }
          return { ops: [], choices: [], kind: "text" };
        },
        opsOf: function (row) {
          var ops = this.options.ops;
          return this.fieldOf(row).ops.map(function (o) { return { value: o, label: ops[o] }; });
        },
        choicesOf: function (row) { return this.fieldOf(row).choices; },
        inputKind: function (row) {
          if (row.op === "is_set" || row.op === "is_not_set") return "none";
          var kind = this.fieldOf(row).kind;
          if (row.op === "regex" || row.op === "contains") return "text";
          if (kind === "enum" && (row.op === "in" || row.op === "not_in")) return "multi";
          if (row.field === "category" && row.op === "under") return "enum";
          return kind;
        },
        setRow: function (row, key, value) { row[key] = value; },
        setValues: function (row, select) {
          row.values = Array.prototype.map.call(select.selectedOptions, function (o) { return o.value; });
        },
        setAction: function (a, key, value) { a[key] = value; },
        setField: function (row, value) {
          row.field = value;
          var ops = this.fieldOf(row).ops;
          if (ops.indexOf(row.op) < 0) row.op = ops[0];
          row.value = this.fieldOf(row).kind === "bool" ? "true" : "";
          row.values = [];
        },
        rowClass: function (row) { return "depth-" + Math.min(row.depth, 8) + (row.kind === "cond" ? " is-cond" : " is-group"); },
        end: function (i) {
          var j = i + 1;
          while (j < this.rows.length && this.rows[j].depth > this.rows[i].depth) j++;
          return j;
        },
        addChild: function (i) { this.rows.splice(this.end(i), 0, rowOf("cond", this.rows[i].depth + 1)); },
        addChildGroup: function (i) {
          var depth = this.rows[i].depth + 1;
          this.rows.splice(this.end(i), 0, rowOf("and", depth), rowOf("cond", depth + 1));
        },
        addRootCondition: function () {
          if (!this.rows.length) this.rows.push(rowOf("and", 0));
          this.addChild(0);
        },
        addRootGroup: function () {
          if (!this.rows.length) this.rows.push(rowOf("and", 0));
          this.addChildGroup(0);
        },
        removeRow: function (i) { this.rows.splice(i, this.end(i) - i); },
        rowValue: function (row) {
          var kind = this.inputKind(row);
          if (kind === "none") return null;
          if (kind === "multi") return row.values.slice();
          if (kind === "number") return row.value === "" ? null : Number(row.value);
          if (kind === "bool") return row.value === "true" || row.value === true;
          return row.value;
        },
        tree: function () {
          var rows = this.rows, self = this;
          function build(i, path) {
            var row = rows[i];
            row.path = path;
            if (row.kind === "cond") return [{ kind: "cond", field: row.field, op: row.op, value: self.rowValue(row) }, i + 1];
            var items = [], j = i + 1;
            while (j < rows.length && rows[j].depth > row.depth) {
              var sub = build(j, row.kind === "not" ? path + ".item" : path + ".items[" + items.length + "]");
              items.push(sub[0]);
              j = sub[1];
            }
            if (row.kind === "not") return [{ kind: "not", item: items.length === 1 ? items[0] : { kind: "and", items: items } }, j];
            return [{ kind: row.kind, items: items }, j];
          }
          return rows.length ? build(0, "condition")[0] : null;
        },

        // -- actions -----------------------------------------------------------------------
        actionName: function (type) {
          for (var i = 0; i < this.options.actions.length; i++) {
            if (this.options.actions[i].value === type) return this.options.actions[i].label;
          }
          return type;
        },
        actionLabel: function (a) { return this.actionName(a.type); },
        addAction: function () {
          if (!this.newAction) return;
          var a = actionOf({ type: this.newAction });
          var first = function (list) { return list && list.length ? list[0].value : ""; };
          a.status = first(this.options.statuses);
          a.priority = first(this.options.priorities);
          a.category = first(this.options.categories);
          a.group_code = first(this.options.groups);
          a.user_id = first(this.options.users);
          a.template_id = first(this.options.templates);
          this.actions.push(a);
          this.newAction = "";
        },
        removeAction: function (i) { this.actions.splice(i, 1); },
        moveAction: function (i, step) {
          var j = i + step;
          if (j < 0 || j >= this.actions.length) return;
          var a = this.actions.splice(i, 1)[0];
          this.actions.splice(j, 0, a);
        },

        // -- errors --------------------------------------------------------------------------
        errorFor: function (path) { return this.errors[path] || ""; },
        errClass: function (path) { return this.errors[path] ? "invalid" : ""; },
        rowError: function (row) {
          if (!row.path) return "";
          var errors = this.errors;
          return errors[row.path] || errors[row.path + ".value"] || errors[row.path + ".op"] ||
            errors[row.path + ".field"] || errors[row.path + ".items"] || errors[row.path + ".item"] || "";
        },
        actionError: function (i) {
          var prefix = "actions[" + i + "]", errors = this.errors;
          var key = Object.keys(errors).filter(function (k) { return k === prefix || k.indexOf(prefix + ".") === 0; })[0];
          return key ? errors[key] : "";
        },
        showProblem: function (problem) {
          var errors = {}, texts = this.texts;
          (problem.errors || []).forEach(function (e) {
            // A dry run sends the form as "rule": its errors name the form's own fields.
            errors[String(e.field).replace(/^rule\./, "")] = texts.checkField + ": " + e.message;
          });
          if (!Object.keys(errors).length && problem.detail) this.general = problem.detail;
          else this.general = texts.saveFailed;
          this.errors = errors;
        },

        // -- talking to the API ----------------------------------------------------------
        spec: function () {
          var trigger = { type: this.triggerType };
          if (this.triggerType === "field_changed") trigger.fields = this.triggerFields.slice();
          if (this.triggerType === "idle") trigger.hours = this.hours === "" ? null : Number(this.hours);
          if (this.triggerType === "scheduled") trigger.at = this.at || null;
          return {
            name: this.name,
            trigger: trigger,
            condition: this.tree(),
            actions: this.actions.map(actionSpec),
            position: this.position,
            is_active: this.isActive,
            stop_processing: this.stopProcessing
          };
        },
        call: function (method, url, body) {
          return fetch(url, {
            method: method,
            credentials: "same-origin",
            headers: { "Content-Type": "application/json", "Accept": "application/json" },
            body: body === undefined ? undefined : JSON.stringify(body)
          }).then(function (response) {
            if (response.status === 204) return { ok: true, body: null };
            return response.json().then(function (json) { return { ok: response.ok, body: json }; });
          });
        },
        save: function () {
          var self = this;
          this.busy = true; this.general = ""; this.errors = {}; this.savedNote = "";
          var url = this.ruleId ? "/api/v1/case-rules/" + this.ruleId : "/api/v1/case-rules";
          this.call(this.ruleId ? "PUT" : "POST", url, this.spec()).then(function (r) {
            self.busy = false;
            if (!r.ok) { self.showProblem(r.body || {}); return; }
            self.savedNote = self.texts.saved;
            window.location.assign("/ui/automation?rule=" + r.body.id);
          }).catch(function () { self.busy = false; self.general = self.texts.serverError; });
        },
        remove: function () {
          var self = this;
          if (!this.ruleId || !window.confirm(this.texts.confirmDelete)) return;
          this.call("DELETE", "/api/v1/case-rules/" + this.ruleId).then(function (r) {
            if (r.ok) window.location.assign("/ui/automation");
            else self.showProblem(r.body || {});
          });
        },
        dryRun: function () {
          var self = this;
          this.errors = {}; this.general = ""; this.dry = null;
          if (!this.caseNumber.trim()) { this.errors = { case_number: this.texts.needCase }; return; }
          this.busy = true;
          this.call("POST", "/api/v1/case-rules/dry-run", { case_number: this.caseNumber.trim(), rule: this.spec() })
            .then(function (r) {
              self.busy = false;
              if (!r.ok) { self.showProblem(r.body || {}); return; }
              self.dry = r.body;
            }).catch(function () { self.busy = false; self.general = self.texts.serverError; });
        },
        dryVerdict: function () { return this.dry ? (this.dry.matched ? this.texts.matched : this.texts.notMatched) : ""; },
        dryClass: function () { return this.dry && this.dry.matched ? "yes" : "no"; },
        dryTrace: function () { return this.dry ? this.dry.trace : []; },
        dryActions: function () { return this.dry ? this.dry.actions : []; },
        dryChanges: function () {
          if (!this.dry) return [];
          var before = this.dry.before, after = this.dry.after;
          return Object.keys(after).filter(function (k) {
            return JSON.stringify(before[k]) !== JSON.stringify(after[k]);
          }).map(function (k) {
            return { key: k, before: JSON.stringify(before[k]), after: JSON.stringify(after[k]) };
          });
        }
      };
    });
  });
})();
