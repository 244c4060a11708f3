// The dashboard's charts: each <canvas data-chart> carries a Chart.js configuration rendered by the server.
(function () {
  "use strict";
  function draw() {
    var canvases = document.querySelectorAll("canvas[data-chart]");
    if (typeof Chart === "undefined") {
      if (canvases.length) { document.getElementById("charts-missing").hidden = false; }
      return;
    }
    Chart.defaults.font.family = "system-ui, sans-serif";
    canvases.forEach(function (canvas) {
      var config = JSON.parse(canvas.dataset.chart);
      config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false },
                                     config.options || {});
      canvas.chart = new Chart(canvas, config);
      canvas.dataset.drawn = "1";
    });
    document.body.dataset.charts = String(canvases.length);
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", draw); } else { draw(); }
})();
