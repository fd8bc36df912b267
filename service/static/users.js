// Users page: the one-time link can be copied; reloading the page does not post the form again
// (which would replace the link just shown).
const box = document.querySelector("[data-testid=new-link]");
if (box) {
  history.replaceState(null, "", "/admin/users");
  const input = box.querySelector("input");
  const copy = document.createElement("button");
  copy.type = "button";
  copy.textContent = "Copy link";
  copy.addEventListener("click", async () => {
    input.select();
    try { await navigator.clipboard.writeText(input.value); copy.textContent = "Copied"; }
    catch (e) { copy.textContent = "Press Ctrl+C to copy"; }
  });
  input.after(copy);
  input.addEventListener("focus", () => input.select());
}
