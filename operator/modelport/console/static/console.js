// Modelport console: the playground's streaming chat and the charts' refresh.
// Hand-written, no build step; loaded with `defer`, no inline script anywhere.
"use strict";

(function () {
  // --- charts: swap in a fresh fragment every 15 s -------------------------------
  document.querySelectorAll("[data-refresh]").forEach(function (box) {
    setInterval(function () {
      fetch(box.dataset.refresh, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) { box.innerHTML = html; } })
        .catch(function () { /* keep the last charts */ });
    }, 15000);
  });

  // --- playground ----------------------------------------------------------------
  var form = document.getElementById("prompt");
  if (!form) { return; }
  var panes = Array.prototype.slice.call(document.querySelectorAll(".pane"));
  var histories = panes.map(function () { return []; });

  function add(pane, role, text) {
    var box = document.createElement("div");
    box.className = "msg " + role;
    box.textContent = text;
    pane.querySelector(".transcript").appendChild(box);
    return box;
  }

  function ms(t) { return Math.round(t) + " ms"; }

  // One message to one pane's endpoint: POST, then read the server-sent events as they come.
  function send(index, text, maxTokens) {
    var pane = panes[index];
    var endpoint = pane.querySelector("select").value;
    if (!endpoint) { return Promise.resolve(); }
    var history = histories[index];
    history.push({ role: "user", content: text });
    add(pane, "user", text);
    var answer = add(pane, "assistant", "");
    var stats = pane.querySelector(".stats");
    stats.textContent = "waiting…";
    var started = performance.now();
    var first = null;
    var usage = null;
    var content = "";
    var parts = endpoint.split("/");
    var url = "/playground/api/" + encodeURIComponent(parts[0]) + "/" + encodeURIComponent(parts[1]);
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Modelport-Console": "1" },
      body: JSON.stringify({ messages: history, max_tokens: maxTokens })
    }).then(function (response) {
      var entity = response.headers.get("served-model-name") || "?";
      if (!response.ok) {
        return response.text().then(function (body) {
          var message = body;
          try { message = JSON.parse(body).error.message; } catch (e) { /* as it came */ }
          throw new Error(response.status + ": " + message);
        });
      }
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      function event(data) {
        if (data === "[DONE]") { return; }
        var chunk = JSON.parse(data);
        if (chunk.error) { throw new Error(chunk.error.message || "the stream failed"); }
        if (chunk.usage) { usage = chunk.usage; }
        (chunk.choices || []).forEach(function (choice) {
          var piece = (choice.delta && choice.delta.content) || "";
          if (piece) {
            if (first === null) { first = performance.now(); }
            content += piece;
            answer.textContent = content;
          }
        });
      }
      function pump() {
        return reader.read().then(function (step) {
          if (step.done) { return; }
          buffer += decoder.decode(step.value, { stream: true });
          var events = buffer.split("\n\n");
          buffer = events.pop();
          events.forEach(function (block) {
            block.split("\n").forEach(function (line) {
              if (line.indexOf("data: ") === 0) { event(line.slice(6)); }
            });
          });
          return pump();
        });
      }
      return pump().then(function () {
        history.push({ role: "assistant", content: content });
        var done = performance.now();
        var tokens = usage ? usage.prompt_tokens + " in / " + usage.completion_tokens + " out" : "tokens not reported";
        stats.textContent = "answered by " + entity + " · " + tokens +
          " · first token " + (first === null ? "–" : ms(first - started)) + " · total " + ms(done - started);
        answer.dataset.entity = entity;
        pane.dataset.done = "true";
      });
    }).catch(function (error) {
      history.pop();
      answer.className = "msg failed";
      answer.textContent = String(error.message || error);
      stats.textContent = "";
      pane.dataset.done = "error";
    });
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = form.elements.message.value.trim();
    if (!text) { return; }
    var maxTokens = parseInt(form.elements.max_tokens.value, 10) || 256;
    form.elements.message.value = "";
    panes.forEach(function (pane) { pane.dataset.done = ""; });
    panes.forEach(function (_, i) { send(i, text, maxTokens); });
  });

  document.getElementById("clear").addEventListener("click", function () {
    histories = panes.map(function () { return []; });
    panes.forEach(function (pane) {
      pane.querySelector(".transcript").textContent = "";
      pane.querySelector(".stats").textContent = "";
      pane.dataset.done = "";
    });
  });
})();
