// The /ui playground: reads the form, calls GET info and POST v2/rerank with the key typed in this tab, and
// draws the ranking. Every text from the user or the server goes into the page as a text node (textContent,
// append of strings), never as markup.
"use strict";

(() => {
  const KEY = "crossrank.apiKey"; // sessionStorage: this tab only, gone when it closes
  const EXCERPT = 240; // characters shown around an evidence span, and of a long document without one
  const $ = (id) => document.getElementById(id);
  let info = null;
  let retry = null; // what to run again once a key is given

  class ApiError extends Error {
    constructor(status, message, retryAfter) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  // An element with attributes (class, text, others) and children (nodes or strings: text nodes).
  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    node.append(...children);
    return node;
  }

  // Relative paths: from /ui they name the API's routes on the same origin (and under a proxy's prefix).
  async function call(path, body) {
    const headers = { Accept: "application/json" };
    const key = sessionStorage.getItem(KEY);
    if (key) headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const started = performance.now();
    const response = await fetch(path, {
      method: body === undefined ? "GET" : "POST",
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    const data = await response.json().catch(() => null);
    const ms = performance.now() - started;
    if (!response.ok) {
      // Cohere's error shape on /v1 and /v2 ({message}), TEI's elsewhere ({error}).
      const message = (data && (data.message || data.error)) || response.statusText || "no message";
      throw new ApiError(response.status, message, response.headers.get("Retry-After"));
    }
    return { data, ms, headers: response.headers };
  }

  function showKeyPrompt(then) {
    const refused = sessionStorage.getItem(KEY) !== null;
    sessionStorage.removeItem(KEY);
    const message = refused ? "The server refused this key: type another." : "This server needs an API key.";
    retry = then;
    $("key-reason").textContent = message;
    $("key-panel").hidden = false;
    $("api-key").focus();
  }

  function showError(text) {
    const box = $("error");
    box.textContent = text;
    box.hidden = false;
  }

  function failed(error, then) {
    if (error instanceof ApiError && error.status === 401) {
      showKeyPrompt(then);
    } else if (error instanceof ApiError) {
      const wait = error.retryAfter ? ` Retry after ${error.retryAfter} s.` : "";
      showError(`Error ${error.status}: ${error.message}${wait}`);
    } else {
      showError(error.message);
    }
  }

  async function loadInfo() {
    try {
      info = (await call("info")).data;
    } catch (error) {
      $("server-status").textContent = "Not connected.";
      failed(error, loadInfo);
      return;
    }
    const parts = [`Model ${info.model_id}`, info.status];
    if (info.device) parts.push(`${info.device}, ${info.dtype}`);
    if (info.max_length) parts.push(`max_length ${info.max_length} tokens`);
    parts.push(`up to ${info.limits.max_documents} documents`);
    $("server-status").textContent = parts.join(" · ");
  }

  // A document given as a JSON string, or an object with a "text" field (as /v1/rerank takes them).
  function documentText(value, where) {
    if (typeof value === "string") return value;
    if (value && typeof value.text === "string") return value.text;
    throw new Error(`${where}: a document must be a string or an object with a "text" string`);
  }

  function parseDocuments(text) {
    if (text.trimStart().startsWith("[")) {
      let list;
      try {
        list = JSON.parse(text);
      } catch (error) {
        throw new Error(`The documents start with "[" but are not a JSON list: ${error.message}`);
      }
      if (!Array.isArray(list)) throw new Error("The documents are JSON but not a list.");
      return list.map((value, i) => documentText(value, `documents[${i}]`));
    }
    return text.split(/\r?\n/).filter((line) => line.trim() !== "");
  }

  async function loadFile(file) {
    const text = await file.text();
    if (!file.name.toLowerCase().endsWith(".jsonl")) {
      $("documents").value = text;
    } else {
      const documents = text
        .split(/\r?\n/)
        .map((line, i) => [line, i])
        .filter(([line]) => line.trim() !== "")
        .map(([line, i]) => documentText(JSON.parse(line), `${file.name} line ${i + 1}`));
      // A JSON list keeps documents that hold line breaks whole.
      $("documents").value = JSON.stringify(documents, null, 1);
    }
    countDocuments();
  }

  function countDocuments() {
    const note = $("documents-count");
    try {
      const n = parseDocuments($("documents").value).length;
      const limit = info ? ` (this server takes up to ${info.limits.max_documents})` : "";
      note.textContent = `${n} document${n === 1 ? "" : "s"}${limit}`;
    } catch (error) {
      note.textContent = error.message;
    }
  }

  function readOptions(fieldset) {
    const options = {};
    for (const input of fieldset.querySelectorAll("[data-option]")) {
      if (input.value === "") continue;
      options[input.dataset.option] = input.type === "number" ? Number(input.value) : input.value;
    }
    return options;
  }

  function describe(options) {
    const parts = Object.entries(options).map(([name, value]) => `${name} ${value}`);
    return parts.length ? parts.join(" · ") : "server defaults";
  }

  // The model's raw output: relevance_score is sigmoid(logit), so logit = ln(p / (1 - p)). Scores that
  // round to 0 or 1 in float64 give about ±36.7, the largest logit that float64 tells apart.
  function logit(p) {
    const q = Math.min(Math.max(p, 1e-16), 1 - 1e-16);
    return Math.log(q) - Math.log1p(-q);
  }

  function bar(kind, fraction, value, title) {
    const fill = el("span", { class: "fill" });
    fill.style.width = `${Math.max(1, Math.round(fraction * 100))}%`; // CSSOM: allowed by the page's CSP
    return el(
      "div",
      { class: `bar-row ${kind}`, title },
      el("span", { class: "label", text: kind }),
      el("span", { class: "bar", "aria-hidden": "true" }, fill),
      el("span", { class: "value", text: value })
    );
  }

  function move(from, to, what) {
    const delta = from - to;
    if (delta === 0) return el("span", { class: "move same", text: `= ${what}` });
    const up = delta > 0;
    return el("span", {
      class: `move ${up ? "up" : "down"}`,
      text: `${up ? "▲" : "▼"} ${Math.abs(delta)} ${what}`,
      title: `${up ? "up" : "down"} ${Math.abs(delta)} from position ${from}`,
    });
  }

  // The long middle of a text cut out, so that a window of several hundred tokens does not fill the screen.
  function clipped(text, limit) {
    return text.length <= limit ? text : `${text.slice(0, limit / 2)} […] ${text.slice(-limit / 2)}`;
  }

  // The document with the evidence span marked, cut to EXCERPT characters around it; the whole text on demand.
  function documentView(text, span) {
    const excerpt = el("blockquote", { class: "excerpt" });
    const from = span ? Math.max(0, span.start - EXCERPT / 2) : 0;
    const to = span ? Math.min(text.length, span.end + EXCERPT / 2) : Math.min(text.length, EXCERPT);
    if (from > 0) excerpt.append("… ");
    if (span) {
      const title = `the best window: characters ${span.start}–${span.end}`;
      const evidence = el("mark", { text: clipped(text.slice(span.start, span.end), EXCERPT * 2), title });
      excerpt.append(text.slice(from, span.start), evidence, text.slice(span.end, to));
    } else {
      excerpt.append(text.slice(from, to));
    }
    if (to < text.length) excerpt.append(" …");
    const view = el("div", { class: "document" }, excerpt);
    if (from > 0 || to < text.length) {
      const whole = el("blockquote", { class: "whole" });
      if (span) {
        whole.append(text.slice(0, span.start), el("mark", { text: text.slice(span.start, span.end) }), text.slice(span.end));
      } else {
        whole.append(text);
      }
      view.append(el("details", {}, el("summary", { text: `whole document (${text.length} characters)` }), whole));
    }
    return view;
  }

  function notes(run) {
    const lines = [];
    const chunked = run.results.filter((r) => (r.chunks || 1) > 1).length;
    if (chunked) {
      lines.push(
        `${chunked} document${chunked === 1 ? " was" : "s were"} longer than one window of ` +
          `${info && info.max_length ? info.max_length : "max_length"} tokens and read in several; ` +
          "the best window is highlighted."
      );
    }
    if (run.options.aggregate === "first") {
      lines.push("aggregate first: only the start of each document (its first window) was read.");
    }
    if (run.options.max_tokens_per_doc) {
      lines.push(`Each document was cut to its first ${run.options.max_tokens_per_doc} tokens.`);
    }
    return lines;
  }

  function timing(run) {
    const h = (name) => run.headers.get(name);
    const server = [["total", "x-total-time"], ["queue", "x-queue-time"], ["inference", "x-inference-time"]]
      .filter(([, name]) => h(name) !== null)
      .map(([label, name]) => `${label} ${h(name)} ms`);
    const parts = [`${Math.round(run.ms)} ms in the browser`];
    if (server.length) parts.push(`server: ${server.join(", ")}`);
    if (h("x-compute-tokens") !== null) parts.push(`${h("x-compute-tokens")} tokens read on ${h("x-compute-type")}`);
    return parts.join(" · ");
  }

  function renderRun(run, name, documents, other) {
    const logits = run.results.map((r) => logit(r.relevance_score));
    const low = Math.min(...logits);
    const high = Math.max(...logits);
    const list = el("ol", { class: "results" });
    run.results.forEach((r, i) => {
      const rank = i + 1;
      const chunks = r.chunks || 1;
      const head = el(
        "div",
        { class: "head" },
        el("span", { class: "rank", text: `#${rank}` }),
        el("span", { class: "origin", text: `document ${r.index + 1}` }),
        move(r.index + 1, rank, "from input order")
      );
      if (other) {
        const before = other.results.findIndex((o) => o.index === r.index);
        if (before < 0) head.append(el("span", { class: "move new", text: `not in ${other.name}'s list` }));
        else head.append(move(before + 1, rank, `from ${other.name} (#${before + 1})`));
      }
      const read = chunks > 1 ? `read in ${chunks} windows, best: characters ${r.span.start}–${r.span.end}` : "read in one window";
      list.append(
        el(
          "li",
          { class: "result", "data-index": String(r.index), "data-relevance": String(r.relevance_score) },
          head,
          bar("relevance", r.relevance_score, r.relevance_score.toFixed(4), "relevance_score = sigmoid(logit)"),
          bar("logit", high > low ? (logits[i] - low) / (high - low) : 1, logits[i].toFixed(3), "the model's raw output"),
          el("p", { class: "read", text: read }),
          documentView(documents[r.index], chunks > 1 ? r.span : null)
        )
      );
    });
    const article = el(
      "article",
      { class: "run", "data-set": name },
      el("h2", { text: `Set ${name}: ${describe(run.options)}` }),
      el("p", { class: "timing", text: timing(run) })
    );
    const noted = notes(run);
    if (noted.length) article.append(el("ul", { class: "notes" }, ...noted.map((text) => el("li", { text }))));
    article.append(list);
    return article;
  }

  async function rerank() {
    $("error").hidden = true;
    let documents;
    try {
      documents = parseDocuments($("documents").value);
    } catch (error) {
      showError(error.message);
      return;
    }
    const sets = [["A", readOptions($("options-a"))]];
    if ($("compare").checked) sets.push(["B", readOptions($("options-b"))]);
    const output = $("output");
    output.setAttribute("aria-busy", "true");
    $("submit").disabled = true;
    try {
      const runs = [];
      for (const [name, options] of sets) {
        const body = { query: $("query").value, documents, ...options };
        const answer = await call("v2/rerank", body);
        runs.push({ name, options, results: answer.data.results, ms: answer.ms, headers: answer.headers });
      }
      const views = runs.map((run, i) => renderRun(run, run.name, documents, i > 0 ? runs[0] : null));
      $("runs").className = runs.length > 1 ? "compare" : "";
      $("runs").replaceChildren(...views);
    } catch (error) {
      failed(error, rerank);
    } finally {
      output.removeAttribute("aria-busy");
      $("submit").disabled = false;
    }
  }

  function start() {
    $("rerank-form").addEventListener("submit", (event) => {
      event.preventDefault();
      rerank();
    });
    $("documents").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        $("rerank-form").requestSubmit();
      }
    });
    $("documents").addEventListener("input", countDocuments);
    $("upload").addEventListener("change", () => {
      const file = $("upload").files[0];
      if (file) loadFile(file).catch((error) => showError(`${file.name}: ${error.message}`));
    });
    $("compare").addEventListener("change", () => {
      $("options-b").hidden = !$("compare").checked;
    });
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY, $("api-key").value);
      $("api-key").value = "";
      $("key-panel").hidden = true;
      $("error").hidden = true;
      const then = retry;
      retry = null;
      if (then) then();
      if (then !== loadInfo && !info) loadInfo();
    });
    loadInfo();
  }

  start();
})();
