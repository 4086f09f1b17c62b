// Shows the viewer's time zone and each UTC time in it, as a tooltip. The pages work without it.
(function () {
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "unknown";
  var offset = -new Date().getTimezoneOffset();
  var sign = offset >= 0 ? "+" : "-";
  var abs = Math.abs(offset);
  var pad = function (n) { return (n < 10 ? "0" : "") + n; };
  var label = zone + " (UTC" + sign + pad(Math.floor(abs / 60)) + ":" + pad(abs % 60) + ")";
  document.addEventListener("DOMContentLoaded", function () {
    var target = document.getElementById("viewer-zone");
    if (target) { target.textContent = label; }
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) { el.title = d.toLocaleString() + " " + zone; }
    });
  });
})();
