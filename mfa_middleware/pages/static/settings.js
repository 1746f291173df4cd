/* Security info: times in the browser's time zone, and copy buttons for secrets shown once.
   The pages work without it: times then read in UTC and secrets stay selectable text. */
(function () {
  "use strict";
  var fmt;
  try {
    fmt = new Intl.DateTimeFormat(undefined, {dateStyle: "medium", timeStyle: "short"});
  } catch (e) { fmt = null; }
  document.querySelectorAll("time[datetime]").forEach(function (el) {
    var d = new Date(el.getAttribute("datetime"));
    if (isNaN(d.getTime())) { return; }
    el.title = el.textContent;
    el.textContent = fmt ? fmt.format(d) : d.toLocaleString();
  });
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) { return; }
    button.hidden = false;
    button.addEventListener("click", function () {
      var said = button.parentNode.querySelector(".settings-copied");
      navigator.clipboard.writeText(source.innerText.trim()).then(function () {
        if (said) { said.textContent = "Copied."; }
      }, function () {
        if (said) { said.textContent = "Select the text and copy it instead."; }
      });
    });
  });
}());
