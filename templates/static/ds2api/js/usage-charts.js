// Usage charts: one Chart.js chart per <canvas data-chart="...">, fed by the JSON in #usage-data.
(function () {
  "use strict";
  var node = document.getElementById("usage-data");
  if (!node || !window.Chart) return;
  var data = JSON.parse(node.textContent);
  var s = data.series;
  var palette = ["#3b5bdb", "#dc2626", "#16a34a", "#d97706", "#7c3aed"];

  function line(label, values, i, fill) {
    return { label: label, data: values, borderColor: palette[i], backgroundColor: palette[i] + "33",
             fill: !!fill, tension: 0.25, pointRadius: 2, borderWidth: 2, spanGaps: true };
  }
  function bar(label, values, i) {
    return { label: label, data: values, backgroundColor: palette[i], stack: "s" };
  }
  var charts = {
    requests: { type: "bar", datasets: [bar("requests", s.requests, 0), bar("errors", s.errors, 1)], stacked: false },
    tokens: { type: "bar", stacked: true, datasets: [
      bar("input", s.input_tokens, 0), bar("output", s.output_tokens, 2),
      bar("cached", s.cached_tokens, 3), bar("reasoning", s.reasoning_tokens, 4)] },
    cost: { type: "line", datasets: [line("cost USD", s.cost_usd, 4, true)] },
    errors: { type: "line", datasets: [line("error %", s.error_pct, 1, true)] },
    latency: { type: "line", datasets: [line("p50", s.p50_ms, 0), line("p95", s.p95_ms, 1), line("average", s.avg_latency_ms, 2)] }
  };

  // The table under each chart is built from the same data the first time it is opened.
  document.querySelectorAll("details[data-table-for]").forEach(function (details) {
    details.addEventListener("toggle", function () {
      var body = details.querySelector("tbody");
      if (!details.open || body.rows.length) return;
      var keys = Array.prototype.map.call(details.querySelectorAll("th[data-key]"), function (th) { return th.dataset.key; });
      var fragment = document.createDocumentFragment();
      data.labels.forEach(function (label, i) {
        var tr = document.createElement("tr");
        var first = document.createElement("td");
        first.textContent = label;
        tr.appendChild(first);
        keys.forEach(function (key) {
          var td = document.createElement("td");
          var value = s[key][i];
          td.className = "num";
          td.textContent = value === null || value === undefined ? "—" : value;
          tr.appendChild(td);
        });
        fragment.appendChild(tr);
      });
      body.appendChild(fragment);
    });
  });

  document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
    var spec = charts[canvas.dataset.chart];
    if (!spec) return;
    new window.Chart(canvas, {
      type: spec.type,
      data: { labels: data.labels, datasets: spec.datasets },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: !!spec.stacked, ticks: { maxTicksLimit: 8, autoSkip: true } },
          y: { stacked: !!spec.stacked, beginAtZero: true }
        },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } }
      }
    });
  });
})();
