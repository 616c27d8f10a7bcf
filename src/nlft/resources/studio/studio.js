// nlft studio: controls, polling and display. Every weight comes from the server, which runs the Python
// weighting functions; this script only moves settings there and shows the HTML it sends back (escaped there).
"use strict";

const POLL_MS = 2000;
const DEBOUNCE_MS = 60;
const $ = (sel) => document.querySelector(sel);

const app = {
  state: null,
  trainer: null, // the settings the run trains with (from the shown snapshot)
  settings: {}, // what the controls say
  step: null, // the step shown
  steps: [],
  seq: 0, // the newest request; answers to older ones are dropped
  timer: null,
  showWeights: true,
  lastStatus: "",
  unreachable: false,
};

// The session token nlft studio printed in the page's URL: every API call carries it.
const TOKEN = new URLSearchParams(window.location.search).get("token") || "";

async function api(path, body) {
  const opts =
    body === undefined
      ? { headers: { "X-Nlft-Token": TOKEN } }
      : {
          method: "POST",
          headers: { "Content-Type": "application/json", "X-Nlft-Token": TOKEN },
          body: JSON.stringify(body),
        };
  const response = await fetch(path, opts);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function status(text, isError) {
  const el = $("#status");
  el.textContent = text;
  el.classList.toggle("error", Boolean(isError));
  if (!isError) app.lastStatus = text;
}

function el(tag, props, children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children || []) node.append(child);
  return node;
}

function shortNumber(v) {
  return Number(Number(v).toPrecision(3));
}

// -- controls ---------------------------------------------------------------------------------------------------

function buildControls(controls) {
  const root = $("#control-groups");
  root.replaceChildren();
  let group = null;
  for (const c of controls) {
    if (c.group !== group) {
      group = c.group;
      root.append(el("h3", { textContent: group }));
    }
    const box = el("div", { className: "ctl", title: c.help });
    box.dataset.name = c.name;
    const head = el("div", { className: "row" }, [
      el("span", {}, [el("span", { className: "name", textContent: c.label }), " ",
        el("span", { className: "field-name", textContent: c.name })]),
    ]);
    box.append(head);
    if (c.choices.length) {
      const select = el("select", { id: "ctl-" + c.name });
      for (const choice of c.choices) select.append(el("option", { value: choice, textContent: choice }));
      select.addEventListener("change", () => changed(c.name, select.value));
      head.append(select);
    } else {
      const number = el("input", { type: "number", id: "num-" + c.name, step: "any" });
      const range = el("input", {
        type: "range",
        id: "ctl-" + c.name,
        min: c.log ? Math.log10(c.min) : c.min,
        max: c.log ? Math.log10(c.max) : c.max,
        step: c.step,
      });
      range.addEventListener("input", () => {
        const v = c.log ? shortNumber(10 ** Number(range.value)) : Number(range.value);
        number.value = v;
        changed(c.name, v);
      });
      number.addEventListener("change", () => {
        const v = Number(number.value);
        if (!Number.isFinite(v)) return;
        range.value = c.log ? Math.log10(Math.max(v, c.min)) : v;
        changed(c.name, v);
      });
      head.append(number);
      box.append(range);
    }
    root.append(box);
  }
}

function showSettings(settings) {
  for (const c of app.state.controls) {
    const v = settings[c.name];
    if (c.choices.length) {
      $("#ctl-" + c.name).value = v;
    } else {
      $("#num-" + c.name).value = v;
      $("#ctl-" + c.name).value = c.log ? Math.log10(Math.max(v, c.min)) : v;
    }
  }
  markChanged();
}

function markChanged() {
  for (const box of document.querySelectorAll(".ctl")) {
    const name = box.dataset.name;
    box.classList.toggle("changed", Boolean(app.trainer) && app.settings[name] !== app.trainer[name]);
  }
}

function changed(name, value) {
  app.settings[name] = value;
  markChanged();
  clearTimeout(app.timer);
  app.timer = setTimeout(() => show(app.step), DEBOUNCE_MS);
}

// -- snapshots --------------------------------------------------------------------------------------------------

function listSteps(steps) {
  app.steps = steps;
  const select = $("#step");
  const chosen = select.value;
  select.replaceChildren(...steps.map((s) => el("option", { value: String(s), textContent: "step " + s })));
  if (chosen) select.value = chosen;
}

async function show(step) {
  const my = ++app.seq;
  document.body.dataset.busy = "1";
  try {
    const data = app.trainer
      ? await api("/api/reweight", { step, settings: app.settings })
      : await api("/api/snapshot" + (step === null ? "" : "?step=" + step));
    if (my !== app.seq) return; // a newer request went out meanwhile
    if (!app.trainer) {
      app.trainer = data.trainer_settings;
      app.settings = { ...data.settings };
      showSettings(app.settings);
    }
    app.step = data.step;
    $("#view").innerHTML = data.html; // rendered and escaped by the server (nlft.visualisation)
    const toggle = $("#show-weights"); // part of the swapped-in legend: keep its state across updates
    toggle.checked = app.showWeights;
    toggle.addEventListener("change", () => (app.showWeights = toggle.checked));
    $("#step").value = String(data.step);
    document.body.dataset.step = String(data.step);
    const epoch = data.epoch === null || data.epoch === undefined ? "" : ` (epoch ${shortNumber(data.epoch)})`;
    status(`step ${data.step}${epoch} · ${data.records.length} records · weighted in ${data.weighting_ms} ms`);
  } catch (err) {
    if (my === app.seq) status(String(err.message || err), true);
  } finally {
    if (my === app.seq) delete document.body.dataset.busy;
  }
}

async function poll() {
  try {
    const data = await api("/api/snapshots");
    const fresh = data.steps.length !== app.steps.length || data.latest !== app.steps[app.steps.length - 1];
    if (fresh) listSteps(data.steps);
    if (data.latest !== null && $("#follow").checked && data.latest !== app.step) await show(data.latest);
    else if (app.unreachable) status(app.lastStatus); // reachable again
    app.unreachable = false;
  } catch (err) {
    app.unreachable = true;
    status("studio unreachable: " + (err.message || err), true);
  }
}

// -- start ------------------------------------------------------------------------------------------------------

async function start() {
  app.state = await api("/api/state");
  $("#run").textContent = app.state.run;
  const info = app.state.info;
  const facts = [info.method, info.base_model, info.records !== undefined ? `${info.records} records` : null];
  $("#facts").textContent = facts.filter(Boolean).join(" · ");
  document.title = "nlft studio · " + app.state.run;
  buildControls(app.state.controls);
  listSteps(app.state.steps);
  if (app.state.steps.length) {
    await show(null);
  } else {
    $("#view").replaceChildren(
      el("div", { className: "empty", textContent:
        "No saliency snapshots in this run yet. They appear here as training writes them (nlft train --saliency_steps K)." }),
    );
    status("waiting for snapshots…");
  }
  $("#step").addEventListener("change", () => {
    $("#follow").checked = false;
    show(Number($("#step").value));
  });
  $("#reset").addEventListener("click", () => {
    app.settings = { ...app.trainer };
    showSettings(app.settings);
    show(app.step);
  });
  $("#defaults").addEventListener("click", () => {
    app.settings = { ...app.settings, ...app.state.defaults };
    showSettings(app.settings);
    show(app.step);
  });
  $("#export").addEventListener("click", async () => {
    const out = $("#export-result");
    try {
      const data = await api("/api/export", { step: app.step, settings: app.settings });
      out.replaceChildren(el("div", { textContent: "written to " + data.path }), el("pre", { textContent: data.yaml }));
    } catch (err) {
      out.replaceChildren(el("div", { textContent: "not written: " + (err.message || err) }));
    }
  });
  $("#apply").addEventListener("click", async () => {
    const out = $("#apply-result");
    try {
      const data = await api("/api/apply", { settings: app.settings });
      app.sent = data.seq;
      out.replaceChildren(el("div", { textContent: `sent (request ${data.seq}); the run uses it from its next step` }));
    } catch (err) {
      out.replaceChildren(el("div", { textContent: "not applied: " + (err.message || err) }));
    }
  });
  setInterval(poll, POLL_MS);
  setInterval(pollLive, POLL_MS);
  pollLive();
}

async function pollLive() {
  try {
    const res = await fetch("/api/live", { headers: { "X-Nlft-Token": TOKEN } });
    if (!res.ok) return;
    const live = await res.json();
    const button = $("#apply");
    button.disabled = !live.training;
    button.title = live.training
      ? `The run trains (step ${live.step}): send these settings, used from its next step`
      : "The run is not training now: settings can only be applied while it trains";
    if (app.sent && live.applied_seq >= app.sent) {
      const text = live.rejected ? `refused by the run: ${live.rejected}` : `applied by the run (request ${app.sent}), by step ${live.step}`;
      $("#apply-result").replaceChildren(el("div", { textContent: text }));
      app.sent = null;
    }
  } catch (err) {
    /* the next poll retries */
  }
}

start().catch((err) => status(String(err.message || err), true));
