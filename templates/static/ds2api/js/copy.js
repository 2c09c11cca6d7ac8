// Copy buttons: <button data-copy="#element-id"> copies that element's text to the clipboard.
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-copy]");
  if (!button) return;
  var source = document.querySelector(button.dataset.copy);
  if (!source) return;
  var status = button.parentElement.querySelector("[data-copy-status]");
  var text = source.textContent.trim();
  function done(ok) { if (status) status.textContent = ok ? "Copied." : "Select the text and copy it by hand."; }
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
  } else {
    var range = document.createRange();
    range.selectNodeContents(source);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    done(document.execCommand && document.execCommand("copy"));
  }
});
