// Small progressive enhancements; every page works without them.
(function () {
  "use strict";

  // Copy buttons: <button data-copy="#selector"> copies the text of the element it names.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) return;
    navigator.clipboard.writeText(source.textContent.trim()).then(function () {
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    });
  });

  // Folder uploads: browsers send each file's name without its folders, so the form carries the
  // relative paths (webkitRelativePath), in file order, as JSON in a hidden field.
  function describeFolder(input) {
    var form = input.form;
    var target = form.querySelector(form.getAttribute("data-folder-paths"));
    var summary = form.querySelector("[data-folder-summary]");
    var files = Array.prototype.slice.call(input.files || []);
    if (target) {
      target.value = files.length ? JSON.stringify(files.map(function (f) { return f.webkitRelativePath || f.name; })) : "";
    }
    if (summary) {
      var bytes = files.reduce(function (total, f) { return total + f.size; }, 0);
      var top = files.length && files[0].webkitRelativePath ? files[0].webkitRelativePath.split("/")[0] : "";
      summary.textContent = files.length
        ? files.length + " file" + (files.length === 1 ? "" : "s") + (top ? " from " + top + "/" : "") +
          ", " + (bytes / 1048576).toFixed(1) + " MB"
        : "";
    }
  }

  document.addEventListener("change", function (event) {
    var input = event.target;
    if (input.matches && input.matches("input[type=file][webkitdirectory]") && input.form &&
        input.form.hasAttribute("data-folder-paths")) {
      describeFolder(input);
    }
  });
  // Forms with data-confirm ask first (deletes, key regeneration); without a script they just submit.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.hasAttribute && form.hasAttribute("data-confirm") && !window.confirm(form.getAttribute("data-confirm"))) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  // Forms with data-json-body="#field" send only JSON: a body that does not parse is refused here, with
  // the parser's words, and no request leaves the page.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute || !form.hasAttribute("data-json-body")) return;
    var field = form.querySelector(form.getAttribute("data-json-body"));
    var message = form.querySelector("[data-json-error]");
    if (!field) return;
    try {
      JSON.parse(field.value);
    } catch (error) {
      event.preventDefault();
      event.stopImmediatePropagation();
      field.setAttribute("aria-invalid", "true");
      if (message) {
        message.textContent = "The body is not valid JSON, so nothing was sent: " + error.message + ".";
        message.hidden = false;
      }
      field.focus();
      return;
    }
    field.removeAttribute("aria-invalid");
    if (message) message.hidden = true;
  }, true);

  // Selects in a form[data-autosubmit] submit it on change (the logs tab's deployment and replica).
  document.addEventListener("change", function (event) {
    var form = event.target.form;
    if (form && form.hasAttribute("data-autosubmit") && event.target.matches("select")) form.submit();
  });

  // Traffic sliders: the live total, the bar, and what to change for the total the server accepts.
  function describeTraffic(form) {
    var inputs = form.querySelectorAll("[data-traffic-input]");
    var total = 0;
    inputs.forEach(function (input) {
      var value = parseInt(input.value, 10) || 0;
      total += value;
      var output = input.parentNode.querySelector("[data-traffic-output]");
      if (output) output.textContent = value + "%";
      var segment = form.querySelector('[data-traffic-segment="' + input.name + '"]');
      if (segment) segment.style.width = Math.min(value, 100) + "%";
    });
    var mirror = form.querySelector("[data-mirror-input]");
    var mirrorOutput = form.querySelector("[data-mirror-output]");
    if (mirror && mirrorOutput) mirrorOutput.textContent = mirror.value + "%";
    var sum = form.querySelector("[data-traffic-sum]");
    if (!sum) return;
    sum.classList.remove("valid", "invalid", "idle", "unserved");
    // Shares given to deployments that cannot serve them (failed, no ready replica): 100% is not enough.
    var unserved = [];
    inputs.forEach(function (input) {
      var value = parseInt(input.value, 10) || 0;
      var problem = input.getAttribute("data-traffic-problem");
      if (value && problem) unserved.push(input.name.replace(/^traffic-/, "") + " (" + value + "%) " + problem);
    });
    if (total === 100 && unserved.length) {
      sum.classList.add("unserved");
      sum.textContent = "Live traffic adds up to 100%, but " + unserved.join("; ") + ".";
    } else if (total === 100) {
      sum.classList.add("valid");
      sum.textContent = "Live traffic adds up to 100%.";
    } else if (total === 0) {
      sum.classList.add("idle");
      sum.textContent = "Live traffic adds up to 0%: no deployment takes live requests, so the endpoint answers 404.";
    } else {
      sum.classList.add("invalid");
      var change = total > 100 ? "take away " + (total - 100) : "add " + (100 - total);
      sum.textContent = "Live traffic adds up to " + total + "%; it must be 100% (or 0%): " + change + "%.";
    }
  }

  // Sample tabs: [data-tabs] holds role=tab buttons and the panels they control.
  function setUpTabs(root) {
    var tabs = root.querySelectorAll("[role=tab]");
    function select(chosen) {
      tabs.forEach(function (tab) {
        var on = tab === chosen;
        tab.setAttribute("aria-selected", on ? "true" : "false");
        var panel = document.getElementById(tab.getAttribute("aria-controls"));
        if (panel) panel.hidden = !on;
      });
    }
    tabs.forEach(function (tab) { tab.addEventListener("click", function () { select(tab); }); });
    if (tabs.length) select(tabs[0]);
    root.classList.add("tabs-ready");
  }

  function enhance(root) {
    root.querySelectorAll("form[data-traffic]").forEach(describeTraffic);
    root.querySelectorAll("[data-tabs]:not(.tabs-ready)").forEach(setUpTabs);
    root.querySelectorAll("pre[data-autoscroll]").forEach(function (pre) { pre.scrollTop = pre.scrollHeight; });
  }

  document.addEventListener("input", function (event) {
    var form = event.target.form;
    if (form && form.hasAttribute("data-traffic")) describeTraffic(form);
  });
  document.addEventListener("DOMContentLoaded", function () { enhance(document); });
  // Parts that htmx swaps in (the traffic card after a save, a refreshed log) get the same treatment.
  document.addEventListener("htmx:afterSettle", function () { enhance(document); });
})();
