/* Security info: times in the browser's time zone (the copy buttons are copy.js, as on every page).
   The pages work without it: times then read in UTC. */
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
}());
