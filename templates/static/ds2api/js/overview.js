// Overview counters: requests/s, error rate, tokens/min, p50/p95 latency and the hourly request count,
// recomputed every second from the "counters" messages of the live socket. The server's own numbers at
// page load seed the windows, so the tiles do not drop to zero while the first live data arrives.
(function () {
  "use strict";
  var seedNode = document.getElementById("overview-seed");
  if (!seedNode) return;
  var seed = JSON.parse(seedNode.textContent);
  var loadedAt = Date.now() / 1000;
  var samples = []; // {t, requests, errors, tokens, latencies}
  var hourly = seed.requests_1h;

  function field(name) { return document.querySelector('[data-stat="' + name + '"]'); }
  function fmt(n) { return Math.round(n).toLocaleString(); }

  function percentile(sorted, p) {
    if (!sorted.length) return null;
    var rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
    return sorted[rank];
  }

  function render() {
    var now = Date.now() / 1000;
    samples = samples.filter(function (s) { return s.t > now - 300; });
    var r60 = 0, tok60 = 0, r300 = 0, e300 = 0, lat = [];
    samples.forEach(function (s) {
      if (s.t > now - 60) { r60 += s.requests; tok60 += s.tokens; }
      r300 += s.requests; e300 += s.errors; lat = lat.concat(s.latencies);
    });
    if (now < loadedAt + 60) { r60 += seed.requests_60s; tok60 += seed.tokens_60s; }
    if (now < loadedAt + 300) { r300 += seed.requests_5m; e300 += seed.errors_5m; }
    field("rps").textContent = (r60 / 60).toFixed(r60 < 600 ? 2 : 0);
    field("tpm").textContent = fmt(tok60);
    field("error_rate").textContent = (r300 ? (100 * e300 / r300).toFixed(1) : "0") + "%";
    field("requests_1h").textContent = fmt(hourly);
    if (lat.length) {
      lat.sort(function (a, b) { return a - b; });
      field("latency").textContent = fmt(percentile(lat, 0.5)) + " / " + fmt(percentile(lat, 0.95)) + " ms";
    }
  }

  document.addEventListener("ds2:counters", function (event) {
    var m = event.detail;
    samples.push({
      t: Date.now() / 1000,
      requests: m.requests || 0,
      errors: m.errors || 0,
      tokens: (m.input_tokens || 0) + (m.output_tokens || 0),
      latencies: m.latency_ms || []
    });
    hourly += m.requests || 0;
    render();
  });
  setInterval(render, 1000);
})();
