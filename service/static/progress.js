// Progress with an ETA from a job's own counters: done (+ failed) of total since started_at.
export function eta(done, total, startedAt, now = Date.now()) {
  if (!startedAt || !total || done <= 0 || done >= total) return "";
  const elapsed = (now - new Date(startedAt).getTime()) / 1000;
  if (!(elapsed > 0)) return "";
  return "about " + duration(elapsed / done * (total - done)) + " left";
}

export function duration(seconds) {
  if (seconds < 90) return Math.max(1, Math.round(seconds)) + " s";
  if (seconds < 5400) return Math.round(seconds / 60) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

// Fill a <progress> and its ETA text; finished jobs show no ETA.
export function show(cell, {done, total, startedAt, finished}) {
  const bar = cell.querySelector("progress");
  const text = cell.querySelector(".eta");
  if (bar) { bar.max = Math.max(1, total); bar.value = Math.min(done, bar.max); }
  if (text) text.textContent = finished ? "" : eta(done, total, startedAt);
}
