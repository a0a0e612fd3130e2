// The Logs tab: follow the end of a replica's log while it grows, and stop moving as soon as the reader
// looks elsewhere (scrolls up, opens a line's fields, selects text); search, level filter and wrapping
// apply to the lines shown and survive each refresh. Without this script the panel still refreshes.
(function () {
  "use strict";

  var RANK = { debug: 0, none: 1, info: 1, warning: 2, error: 3 };
  var following = true;
  // Set while this script scrolls, so its own scroll events are not taken for the reader's.
  var scrolling = false;

  function toolbar() { return document.querySelector("[data-log-toolbar]"); }
  function panel() { return document.querySelector("[data-log-panel]"); }
  function linesBox() { return document.querySelector("[data-log-lines]"); }

  function atEnd(box) {
    return box.scrollHeight - box.scrollTop - box.clientHeight < 8;
  }

  function toEnd() {
    var box = linesBox();
    if (!box) return;
    scrolling = true;
    box.scrollTop = box.scrollHeight;
    window.requestAnimationFrame(function () { scrolling = false; });
  }

  function showFollow() {
    var button = document.querySelector("[data-log-follow]");
    if (!button) return;
    button.setAttribute("aria-pressed", following ? "true" : "false");
    button.textContent = following ? "Following the end" : "Paused · resume following";
    button.classList.toggle("btn-primary", !following);
  }

  function pause() {
    if (!following) return;
    following = false;
    showFollow();
  }

  function resume() {
    following = true;
    showFollow();
    toEnd();
    var current = panel();
    // Read the log now rather than at the next tick: the reader asked for the latest lines.
    if (current && current.getAttribute("hx-get") && window.htmx) {
      window.htmx.ajax("GET", current.getAttribute("hx-get"), { source: current, target: current, swap: "outerHTML" });
    }
  }

  // Search and level filter: a line is shown when it holds the text and its level is high enough.
  function applyFilters() {
    var bar = toolbar();
    var box = linesBox();
    if (!bar || !box) return;
    var search = bar.querySelector("[data-log-search]");
    var level = bar.querySelector("[data-log-level]");
    var wrap = bar.querySelector("[data-log-wrap]");
    var text = search ? search.value.trim().toLowerCase() : "";
    var least = level && level.value ? RANK[level.value] : -1;
    var lines = box.querySelectorAll("[data-log-line]");
    var shown = 0;
    lines.forEach(function (line) {
      var rank = RANK[line.getAttribute("data-level")];
      if (rank === undefined) rank = RANK.none;
      var match = rank >= least && (!text || line.textContent.toLowerCase().indexOf(text) !== -1);
      line.hidden = !match;
      if (match) shown += 1;
    });
    box.classList.toggle("log-wrap", !wrap || wrap.checked);
    var count = bar.querySelector("[data-log-count]");
    if (count) {
      count.textContent = text || least >= 0
        ? shown + " of " + lines.length + " line" + (lines.length === 1 ? "" : "s") + " shown"
        : "";
    }
  }

  function setUp() {
    var bar = toolbar();
    if (!bar) return;
    var tools = bar.querySelector("[data-log-tools]");
    if (tools) tools.hidden = false;
    // Fewer or more lines shown, or lines wrapped differently: a follower still sees the end.
    function refilter() {
      applyFilters();
      if (following) toEnd();
    }
    bar.addEventListener("input", refilter);
    bar.addEventListener("change", refilter);
    bar.addEventListener("click", function (event) {
      if (!event.target.closest("[data-log-follow]")) return;
      if (following) pause(); else resume();
    });
    applyFilters();
    toEnd();
    showFollow();
  }

  // The reader scrolls: away from the end pauses, back to the end follows again.
  document.addEventListener("scroll", function (event) {
    var box = event.target;
    if (scrolling || !box.matches || !box.matches("[data-log-lines]")) return;
    if (atEnd(box)) {
      if (!following) { following = true; showFollow(); }
    } else {
      pause();
    }
  }, true);

  // Opening a line's fields, or selecting text in the log, is reading: a refresh would undo it.
  document.addEventListener("toggle", function (event) {
    if (event.target.closest && event.target.closest("[data-log-lines]") && event.target.open) pause();
  }, true);
  document.addEventListener("selectionchange", function () {
    var selection = document.getSelection();
    var box = linesBox();
    if (box && selection && !selection.isCollapsed && box.contains(selection.anchorNode)) pause();
  });

  // No refresh while paused: the lines stay exactly as the reader left them.
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (!following && event.detail.elt && event.detail.elt.matches("[data-log-panel]")) event.preventDefault();
  });
  document.addEventListener("htmx:afterSettle", function () {
    if (!linesBox()) return;
    applyFilters();
    if (following) toEnd();
  });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setUp);
  else setUp();
})();
