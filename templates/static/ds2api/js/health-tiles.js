// Credential health tiles: "health" messages patch status, in-flight, headroom, last error and a local
// model's state; the per-credential request counts of "counters" messages bump each tile's hourly count; a
// cooling tile counts down to the end of its cooldown.
(function () {
  "use strict";
  var STATUSES = ["ok", "cooling", "invalid", "disabled"];

  function tile(id) { return document.querySelector('[data-credential="' + id + '"]'); }
  function set(el, name, text) {
    var node = el.querySelector('[data-field="' + name + '"]');
    if (node) node.textContent = text;
  }
  function orDash(v) { return v === null || v === undefined ? "—" : String(v); }
  function bytes(n) {  // as Django's filesizeformat renders it on the first paint
    if (!n) return "0\u00a0bytes";
    var units = ["bytes", "KB", "MB", "GB", "TB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + "\u00a0" + units[i];
  }

  function countdown(el) {
    var until = parseFloat(el.dataset.until || "");
    if (!el.classList.contains("cooling") || !until) { set(el, "cooldown", "—"); return; }
    var left = Math.round(until - Date.now() / 1000);
    set(el, "cooldown", left > 0 ? left + " s left" : "ending");
  }

  document.addEventListener("ds2:health", function (event) {
    (event.detail.credentials || []).forEach(function (c) {
      var el = tile(c.id);
      if (!el) return;
      STATUSES.forEach(function (s) { el.classList.remove(s); });
      el.classList.add(c.status);
      var badge = el.querySelector('[data-field="status"]');
      if (badge) { badge.textContent = c.status; badge.className = "badge " + c.status; }
      el.dataset.until = c.cooldown_until || "";
      set(el, "in_flight", orDash(c.in_flight));
      set(el, "max_inflight", c.max_inflight ? c.max_inflight : "∞");
      set(el, "remaining_requests", orDash(c.remaining_requests) + (c.limit_requests ? " / " + c.limit_requests : ""));
      set(el, "remaining_tokens", orDash(c.remaining_tokens) + (c.limit_tokens ? " / " + c.limit_tokens : ""));
      set(el, "last_error", c.last_error || "");
      if (c.local) {
        set(el, "local_state", c.local.loaded ? "loaded" : c.local.loading ? "loading" : "not loaded");
        set(el, "local_memory", bytes(c.local.memory_bytes));
        set(el, "local_tokens_per_s", orDash(c.local.tokens_per_s));
      }
      countdown(el);
    });
  });

  document.addEventListener("ds2:counters", function (event) {
    var per = event.detail.by_credential || {};
    Object.keys(per).forEach(function (id) {
      var el = tile(id);
      if (!el) return;
      var node = el.querySelector('[data-field="requests_1h"]');
      var current = parseInt((node.textContent || "0").replace(/\D/g, ""), 10) || 0;
      node.textContent = (current + per[id]).toLocaleString();
      el.classList.add("fresh");
      setTimeout(function () { el.classList.remove("fresh"); }, 800);
    });
  });

  setInterval(function () {
    document.querySelectorAll("[data-credential]").forEach(countdown);
  }, 1000);
})();
