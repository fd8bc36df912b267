// Pairwise review and adjudication: one keymap (data) drives the keys and the help overlay.
// User text only goes into the page through textContent / .value (never innerHTML).
(function () {
  "use strict";
  const A = window.annotune;
  const data = JSON.parse(document.getElementById("pair-data").textContent);
  const root = document.getElementById("pair");
  const choiceLine = document.getElementById("choice");
  const editBox = document.getElementById("edit-box");
  const edited = document.getElementById("edited");
  const reason = document.getElementById("reason");
  const line = document.getElementById("status-line");
  const help = document.getElementById("help");
  const state = {outcome: null, side: null, sending: false};

  const KEYMAP = [
    {key: "1", help: "answer 1 is better", run: () => choose("preferred", 0)},
    {key: "2", help: "answer 2 is better", run: () => choose("preferred", 1)},
    {key: "t", help: "tie: equally good", run: () => choose("tie", null)},
    {key: "b", help: "both bad", run: () => choose("both_bad", null)},
    {key: "e", help: "edit the preferred answer (it becomes the chosen text)", run: edit},
    {key: "r", help: "write a reason", run: () => reason.focus()},
    {key: "Enter", help: "send the decision (Ctrl+Enter inside the editor)", run: send},
    {key: "?", help: "show these keys", run: () => { help.hidden = false; }},
  ];

  function say(text, isError) {
    line.textContent = text;
    line.classList.toggle("error", !!isError);
  }

  function choose(outcome, side) {
    state.outcome = outcome;
    state.side = side;
    document.querySelectorAll(".candidate").forEach((node, i) => {
      node.classList.toggle("chosen", outcome === "preferred" && i === side);
      node.classList.toggle("rejected", outcome === "preferred" && i !== side);
    });
    root.classList.toggle("both_bad", outcome === "both_bad");
    const words = {preferred: "answer " + ((side || 0) + 1), tie: "tie", both_bad: "both bad"};
    choiceLine.textContent = words[outcome];
    if (outcome !== "preferred") editBox.hidden = true;
    else if (!editBox.hidden) edited.value = data.candidates[side].content;
  }

  function edit() {
    if (state.outcome !== "preferred") { say("Choose the better answer first (1 or 2), then e.", true); return; }
    editBox.hidden = false;
    if (!edited.dataset.touched) edited.value = data.candidates[state.side].content;
    edited.focus();
  }

  async function send() {
    if (state.sending) return;
    if (!state.outcome) { say("Choose first: 1, 2, t or b.", true); return; }
    const pair = data.candidates.map((c) => c.id);
    const body = {outcome: state.outcome, reason: reason.value.trim() || null};
    if (state.outcome === "preferred") {
      body.chosen_id = pair[state.side];
      body.rejected_id = pair[1 - state.side];
      if (!editBox.hidden && edited.value !== data.candidates[state.side].content) body.edited_text = edited.value;
    } else {
      body.chosen_id = pair[0];
      body.rejected_id = pair[1];
    }
    state.sending = true;
    say("Sending…");
    const res = await A.api("POST", data.action, body);
    state.sending = false;
    if (!res.ok) { say(A.errorText(res), true); return; }
    say("Saved (" + res.data.status + ").");
    root.dataset.saved = "1";
    window.location.assign(data.after);
  }

  edited.addEventListener("input", () => { edited.dataset.touched = "1"; });
  document.querySelectorAll("button[data-key]").forEach((button) => {
    button.addEventListener("click", () => {
      const entry = KEYMAP.find((k) => k.key === button.dataset.key);
      if (entry) entry.run();
    });
  });
  const list = document.getElementById("help-keys");
  KEYMAP.forEach((k) => {
    const dt = document.createElement("dt");
    const kbd = document.createElement("kbd");
    kbd.textContent = k.key;
    dt.append(kbd);
    const dd = document.createElement("dd");
    dd.textContent = k.help;
    list.append(dt, dd);
  });

  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") {
      help.hidden = true;
      if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
      return;
    }
    const target = ev.target;
    if (target === edited) {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); send(); }
      return;
    }
    if (target === reason) {
      if (ev.key === "Enter") { ev.preventDefault(); send(); }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const entry = KEYMAP.find((k) => k.key === ev.key);
    if (!entry) return;
    ev.preventDefault();
    entry.run();
  });
})();
