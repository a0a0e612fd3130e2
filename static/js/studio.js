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
})();
