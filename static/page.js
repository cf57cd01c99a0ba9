// Every page: one restored from the back-forward cache (Back, Forward) reloads, so it shows
// the current state rather than the one it was left in.
addEventListener("pageshow", (event) => {
  if (event.persisted) location.reload();
});
