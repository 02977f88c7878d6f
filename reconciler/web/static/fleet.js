// Live updates for fleet serve: one EventSource per page, fragments swapped in place.
// Read-only: nothing here sends anything but GET requests.
(function () {
  "use strict";
  var url = document.body.getAttribute("data-events");
  if (!url || !window.EventSource) { return; }
  var live = document.getElementById("live");
  function put(id, html) { var el = document.getElementById(id); if (el) { el.innerHTML = html; } }
  var source = new EventSource(url);
  source.onopen = function () { live.textContent = "live"; live.className = "live on"; };
  source.onerror = function () { live.textContent = "reconnecting…"; live.className = "live off"; };
  source.addEventListener("fleet", function (e) {
    var d = JSON.parse(e.data); put("rows", d.rows); put("banner", d.banner);
    document.body.setAttribute("data-version", d.version);
  });
  source.addEventListener("budget", function (e) {
    var d = JSON.parse(e.data); put("accounts", d.accounts);
    document.body.setAttribute("data-version", d.version);
  });
  source.addEventListener("hosts", function (e) {
    var d = JSON.parse(e.data); put("board", d.board);
    document.body.setAttribute("data-version", d.version);
  });
  source.addEventListener("tasks", function (e) {
    var d = JSON.parse(e.data); put("lanes", d.lanes);
    document.body.setAttribute("data-version", d.version);
  });
  source.addEventListener("detail", function (e) {
    var d = JSON.parse(e.data); put("detail", d.detail);
    document.body.setAttribute("data-version", d.version);
  });
  source.addEventListener("screen", function (e) {
    var d = JSON.parse(e.data); var el = document.getElementById("screen");
    if (el) { el.textContent = d.lines === null ? "(no screen: the session is gone)" : d.lines.join("\n"); }
  });
})();
