// One websocket per page: typed JSON messages from /ws/live/ are re-dispatched as DOM events
// ("ds2:counters", "ds2:health", "ds2:log", ...) that each widget's own script listens to.
// Reconnects by itself with capped exponential backoff.
(function () {
  "use strict";
  var url = document.body.dataset.liveUrl;
  if (!url || !window.WebSocket) return;
  var status = document.getElementById("live-status");
  var delay = 500;

  function setStatus(text, cls) {
    if (!status) return;
    status.textContent = text;
    status.className = "live-status " + cls;
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + url);
    socket.onopen = function () {
      delay = 500;
      setStatus("live", "on");
      document.body.dataset.live = "on";
    };
    socket.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      if (!message || typeof message.type !== "string") return;
      document.dispatchEvent(new CustomEvent("ds2:" + message.type, { detail: message }));
    };
    socket.onclose = function () {
      document.body.dataset.live = "off";
      setStatus("reconnecting", "off");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 15000);
    };
  }
  connect();
})();
