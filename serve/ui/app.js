// The rewoo-stack playground: runs a task through POST /v1/pipeline/run with "stream": true and
// draws the plan as a DAG whose nodes follow the run's events (see serve/pipeline_route.py for
// the event contract). Vanilla JavaScript, no dependencies; every text from the server is put in
// the page as text (textContent), never as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const KEY_STORE = "rewoo-playground-key";        // sessionStorage: this tab only
  const HISTORY_STORE = "rewoo-playground-history"; // localStorage: the last runs
  const HISTORY_MAX = 20;
  const NODE_W = 168, NODE_H = 46, GAP_X = 56, GAP_Y = 18, PAD = 14;

  const run = { nodes: new Map(), mode: "rewoo", selected: null, task: "", tools: [], started: 0 };

  // -- the API -------------------------------------------------------------------------------
  function headers(json) {
    const h = {};
    if (json) h["Content-Type"] = "application/json";
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) h["Authorization"] = "Bearer " + key;
    return h;
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      return `${response.status}: ${body.error ? body.error.message : JSON.stringify(body)}`;
    } catch (e) {
      return `${response.status} ${response.statusText}`;
    }
  }

  function askForKey(message) {
    $("key-form").hidden = false;
    $("key").focus();
    setStatus(message);
  }

  async function loadTools() {
    let response;
    try {
      response = await fetch("/v1/pipeline/tools", { headers: headers(false) });
    } catch (e) {
      setStatus("cannot reach the server: " + e);
      return;
    }
    if (response.status === 401) {
      sessionStorage.removeItem(KEY_STORE);
      askForKey("This server needs its API key.");
      return;
    }
    if (!response.ok) {
      showError(await errorText(response));
      return;
    }
    $("key-form").hidden = true;
    const body = await response.json();
    const box = $("tools");
    box.querySelectorAll("label").forEach((el) => el.remove());
    for (const tool of body.data) {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "checkbox";
      input.value = tool.name;
      input.checked = true;
      label.title = tool.description;
      label.append(input, document.createTextNode(tool.name));
      box.append(label);
    }
    const mode = $("mode");
    mode.textContent = "";
    for (const name of body.modes) {
      const option = document.createElement("option");
      option.value = option.textContent = name;
      mode.append(option);
    }
    $("run").disabled = false;
    setStatus(`${body.data.length} tools on this server.`);
  }

  // Server-sent events over fetch (EventSource cannot POST): blocks end with a blank line.
  async function readEvents(stream, onEvent) {
    const reader = stream.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).trimStart()).join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        onEvent(JSON.parse(data));
      }
    }
  }

  // -- a run ---------------------------------------------------------------------------------
  async function startRun(event) {
    event.preventDefault();
    const task = $("task").value.trim();
    const tools = [...$("tools").querySelectorAll("input:checked")].map((el) => el.value);
    if (!task) return setStatus("Write a task first.");
    if (!tools.length) return setStatus("Choose at least one tool.");
    const body = { task, tools, mode: $("mode").value, max_new_tokens: Number($("max-tokens").value) || 512,
                   stream: true };
    reset(body);
    document.body.dataset.run = "running";
    $("run").disabled = true;
    setStatus("Running…");
    try {
      const response = await fetch("/v1/pipeline/run", { method: "POST", headers: headers(true),
                                                          body: JSON.stringify(body) });
      if (response.status === 401) {
        sessionStorage.removeItem(KEY_STORE);
        askForKey("The key was refused; enter the server's API key.");
        return finish("error", "401: the API key was refused");
      }
      if (!response.ok) return finish("error", await errorText(response));
      await readEvents(response.body, onEvent);
      if (document.body.dataset.run === "running") finish("error", "the stream ended without an answer");
    } catch (e) {
      finish("error", String(e));
    } finally {
      $("run").disabled = false;
    }
  }

  function reset(body) {
    run.nodes = new Map();
    run.mode = body.mode;
    run.task = body.task;
    run.tools = body.tools;
    run.selected = null;
    run.started = performance.now();
    $("answer-box").hidden = true;
    $("error-box").hidden = true;
    $("detail").hidden = true;
    $("dag-note").textContent = "";
    render();
  }

  function references(input) {
    const seen = [];
    for (const m of String(input).matchAll(/#E(\d+)(?!\d)/g)) {
      const v = "#E" + m[1];
      if (!seen.includes(v) && run.nodes.has(v)) seen.push(v);
    }
    return seen;
  }

  function addStep(s, round) {
    if (run.nodes.has(s.var)) return;
    run.nodes.set(s.var, { var: s.var, tool: s.tool, input: s.input, description: s.description, round,
                           deps: references(s.input), state: "waiting" });
  }

  function onEvent(ev) {
    const node = run.nodes.get(ev.var);
    switch (ev.event) {
      case "step":
        addStep(ev, ev.round);
        break;
      case "plan":
        ev.steps.forEach((s) => addStep(s, ev.round));
        $("dag-note").textContent = ev.round > 1 ? `(round ${ev.round} planned)` : "(planned)";
        break;
      case "start":
        if (node) Object.assign(node, { state: "running", t: ev.t });
        break;
      case "done":
        if (node) Object.assign(node, { state: ev.status, evidence: ev.evidence, seconds: ev.seconds,
                                        error: ev.error, t_end: ev.t });
        break;
      case "agent_step": {
        const v = "Step " + ev.n;
        const action = ev.action || {};
        const previous = ev.n > 1 ? ["Step " + (ev.n - 1)] : [];
        run.nodes.set(v, {
          var: v, tool: action.tool_name || ("final_answer" in ev ? "final answer" : "(no action)"),
          input: action.tool_arguments === undefined ? "" : (typeof action.tool_arguments === "string"
            ? action.tool_arguments : JSON.stringify(action.tool_arguments)),
          description: ev.thought || "", deps: previous, state: ev.error ? "error" : "ok",
          evidence: ev.observation || ev.final_answer || "", error: ev.error,
        });
        break;
      }
      case "answer":
        showAnswer(ev.answer, ev.stats);
        break;
      case "result":
        remember({ task: run.task, mode: run.mode, tools: run.tools, answer: ev.answer, stats: ev.stats });
        finish("done");
        break;
      case "error":
        remember({ task: run.task, mode: run.mode, tools: run.tools, error: ev.error.message });
        finish("error", ev.error.message);
        break;
    }
    render();
    if (run.selected && run.nodes.has(run.selected)) showDetail(run.selected);
    if (document.body.dataset.run === "running") {
      const done = [...run.nodes.values()].filter((n) => !["waiting", "running"].includes(n.state)).length;
      setStatus(`Running… ${done} of ${run.nodes.size} steps done.`);
    }
  }

  function finish(outcome, message) {
    document.body.dataset.run = outcome;
    if (message) showError(message);
    const seconds = ((performance.now() - run.started) / 1000).toFixed(2);
    setStatus(outcome === "done" ? `Done in ${seconds} s.` : "Failed.");
  }

  // -- the DAG -------------------------------------------------------------------------------
  function layout() {
    const level = new Map();
    const rows = [];
    for (const node of run.nodes.values()) {  // insertion order is a topological order
      const l = node.deps.reduce((m, d) => Math.max(m, (level.get(d) ?? -1) + 1), 0);
      level.set(node.var, l);
      (rows[l] = rows[l] || []).push(node);
    }
    const at = new Map();
    rows.forEach((column, l) => column.forEach((node, i) => {
      at.set(node.var, { x: PAD + l * (NODE_W + GAP_X), y: PAD + i * (NODE_H + GAP_Y) });
    }));
    const width = PAD * 2 + Math.max(1, rows.length) * (NODE_W + GAP_X) - GAP_X;
    const height = PAD * 2 + Math.max(1, ...rows.map((c) => c.length)) * (NODE_H + GAP_Y) - GAP_Y;
    return { at, width, height };
  }

  function el(name, attrs, parent) {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (parent) parent.append(e);
    return e;
  }

  function render() {
    const svg = $("dag");
    svg.textContent = "";
    const defs = el("defs", {}, svg);
    const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7",
                                  markerHeight: "7", orient: "auto-start-reverse" }, defs);
    el("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#8a93a6" }, marker);
    const { at, width, height } = layout();
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("preserveAspectRatio", "xMinYMin meet");  // the graph starts on the left
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    for (const node of run.nodes.values()) {
      const to = at.get(node.var);
      for (const dep of node.deps) {
        const from = at.get(dep);
        if (!from) continue;
        const x1 = from.x + NODE_W, y1 = from.y + NODE_H / 2, x2 = to.x, y2 = to.y + NODE_H / 2;
        const mid = (x1 + x2) / 2;
        el("path", { class: "edge", d: `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`,
                     "data-from": dep, "data-to": node.var }, svg);
      }
    }
    for (const node of run.nodes.values()) {
      const p = at.get(node.var);
      const g = el("g", { class: "node" + (run.selected === node.var ? " selected" : ""), "data-var": node.var,
                          "data-state": node.state, transform: `translate(${p.x} ${p.y})`, tabindex: "0" }, svg);
      el("rect", { width: NODE_W, height: NODE_H, rx: 6 }, g);
      const title = el("text", { x: 8, y: 18 }, g);
      const v = el("tspan", { class: "var" }, title);
      v.textContent = node.var + " ";
      const t = el("tspan", {}, title);
      t.textContent = node.tool.length > 18 ? node.tool.slice(0, 17) + "…" : node.tool;
      const sub = el("text", { x: 8, y: 36, class: "sub" }, g);
      sub.textContent = node.state + (node.seconds !== undefined ? ` · ${node.seconds.toFixed(2)} s` : "");
      const tip = el("title", {}, g);
      tip.textContent = `${node.var} = ${node.tool}[${node.input}]`;
      g.addEventListener("click", () => select(node.var));
      g.addEventListener("keydown", (e) => { if (e.key === "Enter") select(node.var); });
    }
  }

  function select(v) {
    run.selected = v;
    render();
    showDetail(v);
  }

  function showDetail(v) {
    const node = run.nodes.get(v);
    if (!node) return;
    $("detail").hidden = false;
    $("detail-title").textContent = `${node.var} · ${node.tool}`;
    const fields = $("detail-fields");
    fields.textContent = "";
    const rows = [
      ["status", node.state], ["input", node.input], [run.mode === "rewoo" ? "plan" : "thought", node.description],
      ["round", node.round], ["depends on", node.deps.join(", ")],
      ["started", node.t !== undefined ? `${node.t.toFixed(2)} s after the run began` : undefined],
      ["took", node.seconds !== undefined ? `${node.seconds.toFixed(3)} s` : undefined], ["error", node.error],
    ];
    for (const [name, value] of rows) {
      if (value === undefined || value === null || value === "") continue;
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = String(value);
      fields.append(dt, dd);
    }
    $("detail-evidence").textContent = node.evidence ?? "(no evidence yet)";
  }

  // -- answer, errors, history ---------------------------------------------------------------
  function showAnswer(answer, stats) {
    $("answer-box").hidden = false;
    $("answer").textContent = answer || "(empty answer)";
    const parts = [`${stats.prompt_tokens} prompt + ${stats.completion_tokens} completion tokens`,
                   `${stats.llm_calls} model calls`, `${stats.wall_s} s wall`];
    if (stats.rounds > 1) parts.push(`${stats.rounds} planning rounds`);
    if (stats.iterations !== undefined) parts.push(`${stats.iterations} agent steps`);
    $("stats").textContent = parts.join(" · ");
  }

  function showError(message) {
    $("error-box").hidden = false;
    $("error").textContent = message;
  }

  function setStatus(text) {
    $("status").textContent = text;
  }

  function loadHistory() {
    try {
      const list = JSON.parse(localStorage.getItem(HISTORY_STORE) || "[]");
      return Array.isArray(list) ? list : [];
    } catch (e) {
      return [];
    }
  }

  function remember(entry) {
    entry.when = new Date().toISOString();
    entry.nodes = [...run.nodes.values()];
    const list = [entry, ...loadHistory()].slice(0, HISTORY_MAX);
    try {
      localStorage.setItem(HISTORY_STORE, JSON.stringify(list));
    } catch (e) {  // full: keep the newest only
      localStorage.setItem(HISTORY_STORE, JSON.stringify([entry]));
    }
    renderHistory();
  }

  function renderHistory() {
    const ol = $("history");
    ol.textContent = "";
    loadHistory().forEach((entry) => {
      const li = document.createElement("li");
      const short = entry.task.length > 70 ? entry.task.slice(0, 69) + "…" : entry.task;
      li.textContent = `${short} — ${entry.mode}, ` + (entry.error ? "failed" : `${entry.stats.wall_s} s`);
      li.title = entry.when;
      li.addEventListener("click", () => restore(entry));
      ol.append(li);
    });
  }

  function restore(entry) {
    run.nodes = new Map((entry.nodes || []).map((n) => [n.var, n]));
    run.mode = entry.mode;
    run.task = entry.task;
    run.selected = null;
    $("task").value = entry.task;
    $("detail").hidden = true;
    $("error-box").hidden = !entry.error;
    if (entry.error) $("error").textContent = entry.error;
    $("answer-box").hidden = !!entry.error;
    if (!entry.error) showAnswer(entry.answer, entry.stats);
    $("dag-note").textContent = `(from ${entry.when})`;
    render();
  }

  // -- wiring --------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    $("server").textContent = location.host;
    $("run").disabled = true;
    $("run-form").addEventListener("submit", startRun);
    $("key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const key = $("key").value.trim();
      if (key) sessionStorage.setItem(KEY_STORE, key);
      $("key").value = "";
      loadTools();
    });
    $("history-clear").addEventListener("click", () => {
      localStorage.removeItem(HISTORY_STORE);
      renderHistory();
    });
    renderHistory();
    render();
    loadTools();
  });
})();
