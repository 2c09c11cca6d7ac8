// Playground: sends the prompt to the gateway's own endpoint in the chosen client protocol, with a
// short-lived token fetched from the dashboard (kept in memory only), and renders the answer as it streams.
(function () {
  "use strict";
  var form = document.getElementById("playground");
  if (!form) return;
  var output = document.getElementById("pg-output");
  var raw = document.getElementById("pg-raw");
  var status = document.getElementById("pg-status");
  var stopButton = document.getElementById("pg-stop");
  var tokens = {}; // team id -> {token, expires_at}
  var controller = null;

  function csrf() { return form.querySelector("input[name=csrfmiddlewaretoken]").value; }

  function token(team) {
    var cached = tokens[team];
    if (cached && cached.expires_at - 30 > Date.now() / 1000) return Promise.resolve(cached.token);
    var body = new URLSearchParams({ team: team });
    return fetch(form.dataset.tokenUrl, {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "X-CSRFToken": csrf() }
    }).then(function (r) {
      return r.json().then(function (data) {
        if (!r.ok) throw new Error(data.error || ("token request failed: HTTP " + r.status));
        tokens[team] = data;
        return data.token;
      });
    });
  }

  // Per protocol: the request to send and how to pull text out of a JSON event / whole response.
  var PROTOCOLS = {
    openai_chat: {
      request: function (m, p, s, t) {
        return { url: "/v1/chat/completions", headers: { authorization: "Bearer " + t },
                 body: { model: m, stream: s, messages: [{ role: "user", content: p }] } };
      },
      delta: function (e) { return e.choices && e.choices[0] && e.choices[0].delta ? e.choices[0].delta.content : ""; },
      whole: function (r) { return r.choices && r.choices[0] ? r.choices[0].message.content : ""; }
    },
    openai_responses: {
      request: function (m, p, s, t) {
        return { url: "/v1/responses", headers: { authorization: "Bearer " + t },
                 body: { model: m, stream: s, input: p } };
      },
      delta: function (e) { return e.type === "response.output_text.delta" ? e.delta : ""; },
      whole: function (r) {
        return (r.output || []).map(function (item) {
          return (item.content || []).map(function (c) { return c.text || ""; }).join("");
        }).join("");
      }
    },
    anthropic: {
      request: function (m, p, s, t) {
        return { url: "/v1/messages", headers: { "x-api-key": t, "anthropic-version": "2023-06-01" },
                 body: { model: m, stream: s, max_tokens: 1024, messages: [{ role: "user", content: p }] } };
      },
      delta: function (e) { return e.type === "content_block_delta" && e.delta ? e.delta.text : ""; },
      whole: function (r) { return (r.content || []).map(function (c) { return c.text || ""; }).join(""); }
    },
    gemini: {
      request: function (m, p, s, t) {
        var path = "/v1beta/models/" + encodeURIComponent(m) + (s ? ":streamGenerateContent?alt=sse" : ":generateContent");
        return { url: path, headers: { "x-goog-api-key": t },
                 body: { contents: [{ role: "user", parts: [{ text: p }] }] } };
      },
      delta: function (e) { return PROTOCOLS.gemini.whole(e); },
      whole: function (r) {
        var c = r.candidates && r.candidates[0];
        return c && c.content ? (c.content.parts || []).filter(function (x) { return !x.thought; })
          .map(function (x) { return x.text || ""; }).join("") : "";
      }
    },
    ollama_chat: {
      request: function (m, p, s, t) {
        return { url: "/api/chat", headers: { authorization: "Bearer " + t },
                 body: { model: m, stream: s, messages: [{ role: "user", content: p }] } };
      },
      delta: function (e) { return e.message ? e.message.content : ""; },
      whole: function (r) { return r.message ? r.message.content : ""; },
      ndjson: true
    }
  };

  function errorText(data, httpStatus) {
    var err = data && (data.error || data);
    var message = err && (err.message || (typeof err === "string" ? err : ""));
    return "HTTP " + httpStatus + (message ? ": " + message : "");
  }

  // Reads SSE "data:" lines (or NDJSON lines) and calls onEvent with each parsed JSON object.
  function readStream(response, ndjson, onEvent) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    function handle(line) {
      line = line.replace(/\r$/, "");
      var payload = ndjson ? line : (line.indexOf("data:") === 0 ? line.slice(5).trim() : "");
      if (!payload || payload === "[DONE]") return;
      try { onEvent(JSON.parse(payload)); } catch (e) { /* a partial or non-JSON line: skip */ }
    }
    function pump() {
      return reader.read().then(function (chunk) {
        if (chunk.done) { if (buffer) handle(buffer); return; }
        buffer += decoder.decode(chunk.value, { stream: true });
        var lines = buffer.split("\n");
        buffer = lines.pop();
        lines.forEach(handle);
        return pump();
      });
    }
    return pump();
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var protocol = PROTOCOLS[form.protocol.value];
    var stream = form.stream.checked;
    output.textContent = "";
    raw.textContent = "";
    output.classList.remove("failed");
    status.textContent = "sending…";
    stopButton.disabled = false;
    controller = new AbortController();
    var started = performance.now();
    token(form.team.value).then(function (t) {
      var req = protocol.request(form.model.value.trim(), form.prompt.value, stream, t);
      req.headers["content-type"] = "application/json";
      return fetch(req.url, { method: "POST", headers: req.headers, body: JSON.stringify(req.body),
                              signal: controller.signal, credentials: "omit" });
    }).then(function (response) {
      var contentType = response.headers.get("content-type") || "";
      if (!response.ok) {
        return response.json().catch(function () { return null; }).then(function (data) {
          throw new Error(errorText(data, response.status));
        });
      }
      if (stream && response.body && (protocol.ndjson || contentType.indexOf("json") === -1)) {
        var first = true;
        return readStream(response, !!protocol.ndjson, function (e) {
          raw.textContent += JSON.stringify(e) + "\n";
          var text = protocol.delta(e);
          if (text) {
            if (first) { status.textContent = "streaming (first token after " + Math.round(performance.now() - started) + " ms)"; first = false; }
            output.textContent += text;
          }
        });
      }
      return response.json().then(function (data) {
        raw.textContent = JSON.stringify(data, null, 2);
        output.textContent = protocol.whole(data) || "";
      });
    }).then(function () {
      status.textContent = "done in " + Math.round(performance.now() - started) + " ms";
    }).catch(function (err) {
      status.textContent = err.name === "AbortError" ? "stopped" : String(err.message || err);
      if (err.name !== "AbortError") output.classList.add("failed");
    }).finally(function () {
      stopButton.disabled = true;
      controller = null;
    });
  });

  stopButton.addEventListener("click", function () { if (controller) controller.abort(); });
})();
