// "Select all" for the admin user list: the list works without it (each box is ticked on its own).
(function () {
  var all = document.getElementById("select-all");
  if (!all) { return; }
  all.hidden = false;
  all.addEventListener("change", function () {
    document.querySelectorAll('input[type=checkbox][name=user]').forEach(function (box) { box.checked = all.checked; });
  });
}());
