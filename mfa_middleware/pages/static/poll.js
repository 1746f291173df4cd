// Out-of-band methods (a phone call, a push request): polls the attempt's status every interval and submits the verify form once it is no longer pending, or
// once the sign-in cannot wait here any longer (a 4xx or a redirect: ended, blocked, locked; the form's answer
// says why). A network or server error is retried.
(function () {
  "use strict";
  var wait = document.querySelector("[data-poll]");
  if (!wait) { return; }
  var form = wait.closest("form");
  var url = wait.getAttribute("data-poll");
  var interval = parseInt(wait.getAttribute("data-interval"), 10) || 2000;
  var done = false;
  function poll() {
    if (done) { return; }
    fetch(url, {credentials: "same-origin", cache: "no-store", headers: {"Accept": "application/json"}})
      .then(function (r) {
        if (r.ok && !r.redirected) { return r.json(); }
        return (r.redirected || (r.status >= 400 && r.status < 500)) ? {status: "ended"} : {status: "pending"};
      })
      .then(function (data) {
        if (data.status && data.status !== "pending") { done = true; form.submit(); }
        else { setTimeout(poll, interval); }
      })
      .catch(function () { setTimeout(poll, interval); });
  }
  setTimeout(poll, interval);
}());
