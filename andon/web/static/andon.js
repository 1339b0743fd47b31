// Keyboard shortcuts on the review page: 1-9 a class, u unsure, s skip. Nothing is pre-selected.
document.addEventListener("keydown", function (e) {
  var form = document.getElementById("choices");
  if (!form || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.target && /INPUT|TEXTAREA/.test(e.target.tagName)) return;
  var button = form.querySelector('button[data-key="' + e.key.toLowerCase() + '"]');
  if (button) { e.preventDefault(); button.disabled = false; button.click(); }
});
