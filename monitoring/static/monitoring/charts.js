// Draws the plotly figures the server built: each [data-figure] element names the JSON script holding its
// figure. `htmx:load` fires for the page and for every piece of content htmx swaps in (filter changes,
// live refresh); afterSwap would not do: with outerHTML it fires on the element that was just removed.
(function () {
  "use strict";

  function draw(root) {
    if (!window.Plotly || !root.querySelectorAll) return;
    root.querySelectorAll("[data-figure]").forEach(function (target) {
      var source = document.getElementById(target.getAttribute("data-figure"));
      if (!source) return;
      var figure = JSON.parse(source.textContent);
      window.Plotly.react(target, figure.data, figure.layout, { responsive: true, displaylogo: false });
    });
  }

  window.addEventListener("load", function () { draw(document); });
  document.addEventListener("htmx:load", function (event) { draw(event.target); });
})();
