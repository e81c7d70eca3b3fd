// The explorer works without JavaScript; this only re-submits the form when another version is
// picked to compare with, so the switcher acts at once.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("explore");
  const compare = document.getElementById("compare");
  if (form && compare) {
    compare.addEventListener("change", () => form.submit());
  }
});
