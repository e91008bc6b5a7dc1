// healthtransfer web page: plain JavaScript, no build step, no external resources.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  let model = null;

  function key() { return sessionStorage.getItem("ht-key") || ""; }

  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    opts.headers["Accept"] = "application/json";
    if (key()) opts.headers["X-API-Key"] = key();
    if (opts.body && typeof opts.body !== "string") {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(opts.body);
    }
    const res = await fetch(path, opts);
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    return { status: res.status, data: data };
  }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) e.setAttribute(k, v);
    }
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // ---- form from the schema ---------------------------------------------------------------
  function buildForm(schema, ranges) {
    const box = $("fields");
    box.replaceChildren();
    for (const f of schema.features) {
      const row = el("div", { class: "field" });
      const id = "f-" + f.name;
      const label = el("label", { for: id }, f.name + (f.unit ? " (" + f.unit + ")" : "") + (f.required ? " (required)" : ""));
      row.appendChild(label);
      let input;
      if (f.kind === "numeric") {
        input = el("input", { id: id, name: f.name, type: "number", step: "any", inputmode: "decimal",
          min: f.range ? f.range[0] : null, max: f.range ? f.range[1] : null,
          required: f.required ? "required" : null, "aria-required": f.required ? "true" : null });
      } else {
        input = el("select", { id: id, name: f.name });
        input.appendChild(el("option", { value: "" }, "not measured"));
        for (const c of f.categories || []) input.appendChild(el("option", { value: JSON.stringify(c) }, String(c)));
      }
      input.dataset.kind = f.kind;
      row.appendChild(input);
      const hint = el("small", { class: "hint", id: id + "-hint" });
      const parts = [];
      if (f.range) parts.push("allowed " + f.range[0] + " to " + f.range[1]);
      const tr = ranges[f.name];
      if (tr && tr[0] !== null) parts.push("seen in training " + tr[0] + " to " + tr[1]);
      if (f.description) parts.push(f.description);
      hint.textContent = parts.join(" · ");
      row.appendChild(hint);
      const msg = el("small", { class: "msg", id: id + "-msg", "aria-live": "polite" });
      row.appendChild(msg);
      input.addEventListener("input", () => check(f, input, msg, tr));
      box.appendChild(row);
    }
  }

  function check(f, input, msg, tr) {
    msg.textContent = "";
    input.classList.remove("bad", "warn");
    if (f.kind !== "numeric") return true;
    if (input.validity && input.validity.badInput) { msg.textContent = "not a number"; input.classList.add("bad"); return false; }
    if (input.value === "" && f.required) {
      // an existing score the model recalibrates: there is no version of the model without it
      msg.textContent = "required: this model needs it";
      input.classList.add("bad");
      return false;
    }
    if (input.value === "") return true;
    const v = Number(input.value);
    if (!Number.isFinite(v)) { msg.textContent = "not a number"; input.classList.add("bad"); return false; }
    if (f.range && (v < f.range[0] || v > f.range[1])) {
      msg.textContent = "outside the allowed range " + f.range[0] + " to " + f.range[1] + (f.unit ? " " + f.unit : "");
      input.classList.add("bad");
      return false;
    }
    if (tr && tr[0] !== null && (v < tr[0] || v > tr[1])) {
      msg.textContent = "outside the range seen in training; the estimate is an extrapolation";
      input.classList.add("warn");
    }
    return true;
  }

  function readRecord() {
    const rec = {};
    let ok = true;
    let firstBad = null;
    for (const f of model.schema.features) {
      const input = $("f-" + f.name);
      if (f.kind === "numeric" && !check(f, input, $("f-" + f.name + "-msg"), (model.training_ranges || {})[f.name])) {
        ok = false;
        firstBad = firstBad || input;
        continue;
      }
      if (input.value === "") { rec[f.name] = null; continue; }
      if (f.kind === "numeric") {
        rec[f.name] = Number(input.value);
      } else {
        rec[f.name] = JSON.parse(input.value);
      }
    }
    if (firstBad) firstBad.focus();
    return ok ? rec : null;
  }

  // ---- results ----------------------------------------------------------------------------
  function showErrors(data) {
    const list = $("risk-flags");
    list.replaceChildren();
    for (const e of (data && data.errors) || []) {
      const field = e.loc.filter((p) => typeof p === "string" && p !== "body" && p !== "record").join(".");
      list.appendChild(el("li", { class: "bad" }, (field || "request") + ": " + e.msg + (e.expected ? " (expected " + e.expected + ")" : "")));
    }
  }

  function showPrediction(p) {
    if (p.risk) {  // survival bundle: a risk per horizon
      $("risk-value").textContent = Object.entries(p.risk)
        .sort((a, b) => Number(a[0]) - Number(b[0]))
        .map(([h, r]) => (100 * r).toFixed(1) + "% within " + h + " " + p.time_unit).join("; ");
      $("risk-class").textContent = "";
      $("risk-uncertainty").textContent = "No per-prediction interval for survival models; see the model card.";
    } else if (p.prediction !== undefined) {  // regression bundle: the value and its interval
      $("risk-value").textContent = Number(p.prediction).toFixed(2);
      $("risk-class").textContent = "";
      $("risk-uncertainty").textContent = (100 * p.interval_level).toFixed(0) + "% prediction interval " +
        Number(p.interval[0]).toFixed(2) + "–" + Number(p.interval[1]).toFixed(2);
    } else {
      showRisk(p);
    }
    const list = $("risk-flags");
    list.replaceChildren();
    if (p.flags.missing.length) list.appendChild(el("li", { class: "warn" }, "not measured: " + p.flags.missing.join(", ")));
    if (p.flags.outside_training_range.length) list.appendChild(el("li", { class: "warn" }, "outside the training range: " + p.flags.outside_training_range.join(", ")));
    if (p.flags.unseen_category.length) list.appendChild(el("li", { class: "warn" }, "category not seen in training: " + p.flags.unseen_category.join(", ")));
  }

  function showRisk(p) {
    $("risk-value").textContent = (100 * p.probability).toFixed(1) + "%";
    $("risk-class").textContent = "predicted class " + p["class"];
    const u = p.uncertainty;
    $("risk-uncertainty").textContent = u && u.interval && u.interval[0] !== null && u.interval[1] !== null &&
        u.observed_rate !== null && u.observed_rate !== undefined
      ? "Observed rate for similar predicted risks on the target site: " + (100 * u.observed_rate).toFixed(0) +
        "% (" + (100 * u.interval[0]).toFixed(0) + "–" + (100 * u.interval[1]).toFixed(0) + "%)"
      : modelUncertainty();
  }

  function modelUncertainty() {
    const m = model && model.metrics;
    const overall = m && (m.overall || m.target || m);
    const auc = overall && (overall.auroc || overall.auc || overall.roc_auc);
    if (auc && auc.ci) return "Target-test AUROC " + Number(auc.value).toFixed(2) + " (95% CI " + Number(auc.ci[0]).toFixed(2) + "–" + Number(auc.ci[1]).toFixed(2) + ")";
    return "No per-prediction interval in this bundle; see the model card for test performance.";
  }

  function showContributions(ex) {
    const box = $("contrib");
    box.replaceChildren();
    $("explain-method").textContent = ex.method + ", " + ex.scale;
    const top = ex.contributions.slice(0, 8);
    const maxAbs = Math.max(1e-9, ...top.map((c) => Math.abs(c.contribution)));
    for (const c of top) {
      const row = el("div", { class: "bar-row" });
      row.appendChild(el("span", { class: "bar-label" }, c.feature + (c.missing ? " (missing)" : "")));
      const track = el("span", { class: "bar-track" });
      const bar = el("span", { class: "bar " + (c.contribution >= 0 ? "up" : "down") });
      bar.style.width = (50 * Math.abs(c.contribution) / maxAbs).toFixed(1) + "%";
      if (c.contribution >= 0) bar.style.left = "50%"; else bar.style.right = "50%";
      track.appendChild(bar);
      row.appendChild(track);
      row.appendChild(el("span", { class: "bar-value" }, (c.contribution >= 0 ? "+" : "") + c.contribution.toFixed(2)));
      box.appendChild(row);
    }
  }

  async function onPredict(ev) {
    ev.preventDefault();
    const rec = readRecord();
    if (!rec) return;
    $("result").hidden = false;
    const r = await api("/v1/predict", { method: "POST", body: { record: rec } });
    if (r.status !== 200) {
      $("risk-value").textContent = "—";
      $("risk-class").textContent = r.status === 422 ? "invalid input" : "error " + r.status + (r.data && r.data.detail ? ": " + r.data.detail : "");
      $("risk-uncertainty").textContent = "";
      showErrors(r.data);
      $("contrib").replaceChildren();
      return;
    }
    showPrediction(r.data.predictions[0]);
    const e = await api("/v1/explain", { method: "POST", body: { record: rec } });
    if (e.status === 200) showContributions(e.data);
    const c = await api("/cds-services/healthtransfer-risk/preview", { method: "POST", body: { record: rec } });
    if (c.status === 200) showCards(c.data.cards);
    refreshDrift();
  }

  // ---- CDS Hooks cards as an EHR shows them (text only: no HTML from the server is injected)
  function cardLine(line) {
    const p = el("p", { class: line.startsWith("- ") ? "card-item" : "" });
    const text = line.startsWith("- ") ? line.slice(2) : line;
    text.split(/(\*\*[^*]+\*\*|`[^`]+`)/).forEach((part) => {
      if (part.startsWith("**") && part.endsWith("**")) p.appendChild(el("strong", {}, part.slice(2, -2)));
      else if (part.startsWith("`") && part.endsWith("`")) p.appendChild(el("code", {}, part.slice(1, -1)));
      else if (part) p.appendChild(document.createTextNode(part));
    });
    return p;
  }

  function showCards(cards) {
    const box = $("cds-cards");
    box.replaceChildren();
    for (const card of cards) {
      const c = el("article", { class: "cds-card " + card.indicator, "data-indicator": card.indicator });
      c.appendChild(el("p", { class: "cds-summary" }, card.summary));
      for (const line of (card.detail || "").split("\n")) if (line.trim()) c.appendChild(cardLine(line));
      const foot = el("p", { class: "muted" }, "Source: " + card.source.label);
      c.appendChild(foot);
      for (const l of card.links || []) {
        const a = el("a", { href: l.url, rel: "noopener" }, l.label);
        c.appendChild(a);
      }
      box.appendChild(c);
    }
    $("ehr").hidden = false;
  }

  // ---- model card and drift ---------------------------------------------------------------
  function showModel(m) {
    $("model-line").textContent = m.method + " · model " + m.model_version + " · healthtransfer " + m.service_version;
    const dl = $("card-summary");
    dl.replaceChildren();
    const t = m.training || {};
    const add = (k, v) => { dl.appendChild(el("dt", {}, k)); dl.appendChild(el("dd", {}, v)); };
    add("Dataset", String(t.dataset || ""));
    if (t.sources) add("Source sites", t.sources.join(", "));
    if (t.target) add("Target site", String(t.target));
    add("Training rows", String(t.n_rows));
    add("Performance", modelUncertainty());
    $("card-text").textContent = m.card;
  }

  async function refreshDrift() {
    const r = await api("/v1/drift");
    const p = $("drift-status");
    p.classList.remove("bad", "ok");
    if (r.status !== 200) { p.textContent = r.status === 403 ? "This key cannot read drift (read scope needed)." : "Drift unavailable (" + r.status + ")."; return; }
    const d = r.data;
    if (d.status === "insufficient data") {  // PSI of a handful of records is noise: do not show it
      p.textContent = "insufficient data · " + d.window + " recent records (drift is assessed from " + d.min_count + ")";
      return;
    }
    const worst = d.features.slice(0, 3).filter((f) => f.psi !== null).map((f) => f.name + " " + f.psi.toFixed(2)).join(", ");
    p.textContent = d.status + " · " + d.window + " recent records · highest PSI: " + (worst || "n/a") + " (alarm above " + d.threshold + ")";
    p.classList.add(d.alarm ? "bad" : "ok");
  }

  async function loadModel() {
    const r = await api("/v1/model");
    if (r.status !== 200) {
      model = null;
      $("predict-btn").disabled = true;
      $("fields").replaceChildren();
      $("result").hidden = true;
      $("auth-msg").textContent = r.status !== 401 ? "Could not load the model (" + r.status + ")."
        : key() ? "This API key was not accepted; enter a valid API key." : "Enter an API key to load the model.";
      return;
    }
    $("auth-msg").textContent = key() ? "Key accepted." : "No API key needed (authentication is disabled on this server).";
    model = r.data;
    buildForm(model.schema, model.training_ranges || {});
    showModel(model);
    $("predict-btn").disabled = false;
    refreshDrift();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("key-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      sessionStorage.setItem("ht-key", $("api-key").value.trim());
      $("api-key").value = "";
      loadModel();
    });
    $("record-form").addEventListener("submit", onPredict);
    $("drift-btn").addEventListener("click", refreshDrift);
    loadModel();
  });
})();
