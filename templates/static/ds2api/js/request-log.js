// Request log: on the unfiltered first page, rows of new requests from the live socket appear on top.
(function () {
  "use strict";
  var table = document.getElementById("request-log");
  if (!table || table.dataset.live !== "1") return;
  var body = table.tBodies[0];
  var admin = table.dataset.admin === "1";
  var MAX_ROWS = 200;

  function cell(text, cls) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text === null || text === undefined ? "" : String(text);
    return td;
  }
  // Live rows carry ids; the filter menus above already list the names this user may see.
  function label(selectId, id, fallback) {
    if (id === null || id === undefined) return "";
    var option = document.querySelector("#" + selectId + ' option[value="' + String(id).replace(/\D/g, "") + '"]');
    return option ? option.textContent : fallback + " " + id;
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function when(t) {
    var d = new Date(t * 1000);
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds());
  }

  document.addEventListener("ds2:log", function (event) {
    var empty = body.querySelector("tr.empty");
    if (empty) empty.remove();
    (event.detail.rows || []).forEach(function (r) {
      var tr = document.createElement("tr");
      tr.className = "fresh";
      var first = document.createElement("td");
      var link = document.createElement("a");
      link.href = "/requests/" + encodeURIComponent(r.id) + "/";
      link.textContent = when(r.t);
      first.appendChild(link);
      tr.appendChild(first);
      tr.appendChild(cell(label("l-team", r.team_id, "team")));
      tr.appendChild(cell(label("l-token", r.token_id, "token")));
      tr.appendChild(cell(r.model, "mono"));
      tr.appendChild(cell(r.protocol));
      if (admin) tr.appendChild(cell(r.credential_id === null ? "" : "#" + r.credential_id));
      var status = cell("", "num");
      var badge = document.createElement("span");
      badge.className = "badge " + (r.status >= 400 ? "error" : "ok");
      badge.textContent = r.status;
      status.appendChild(badge);
      tr.appendChild(status);
      tr.appendChild(cell(r.input_tokens, "num"));
      tr.appendChild(cell(r.output_tokens, "num"));
      tr.appendChild(cell(r.latency_ms, "num"));
      tr.appendChild(cell(r.error_type));
      body.insertBefore(tr, body.firstChild);
    });
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
  });
})();
