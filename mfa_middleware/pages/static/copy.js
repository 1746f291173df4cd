// Copy buttons for secrets shown once (an authenticator key, backup codes, an app password). Each
// <button data-copy="ID" hidden> copies the text of the element with that id (a list: one item a line; or the
// element's data-copy-text; without spaces with data-copy-compact) and says so in the element "ID-copied" (a live region). The buttons stay hidden
// without JavaScript: the secrets are plain, selectable text either way. Loaded as a file: the CSP forbids inline
// script.
(function () {
  "use strict";
  function textOf(source) {
    var given = source.getAttribute("data-copy-text");
    if (given) { return given; }
    var items = source.querySelectorAll("li");
    if (items.length) {
      return Array.prototype.map.call(items, function (li) { return li.textContent.trim(); }).join("\n");
    }
    return source.textContent.trim();
  }
  function selectText(source) {
    var range = document.createRange();
    range.selectNodeContents(source);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    try { return document.execCommand("copy"); } catch (e) { return false; }
  }
  Array.prototype.forEach.call(document.querySelectorAll("button[data-copy]"), function (button) {
    var id = button.getAttribute("data-copy");
    var source = document.getElementById(id);
    var status = document.getElementById(id + "-copied");
    if (!source) { return; }
    function say(ok) {
      if (status) { status.textContent = ok ? "Copied." : "Press Ctrl+C (or \u2318C) to copy the selected text."; }
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      var text = textOf(source);
      if (button.hasAttribute("data-copy-compact")) { text = text.replace(/\s+/g, ""); }
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function () { say(true); }, function () { say(selectText(source)); });
      } else {
        say(selectText(source));
      }
    });
  });
}());
