// The workbench's keyboard layer (our own code, not vendored). Every key presses a button or a
// form that also works with the mouse; nothing here talks to the server by itself, so the CSRF
// token, version and lease travel in the forms. No inline script: the CSP allows 'self' only.
(function () {
  "use strict";

  function typing(el) {
    return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT" || el.isContentEditable);
  }

  function toggleKeys() {
    var d = document.getElementById("keys");
    if (!d) return;
    if (d.open) d.close(); else d.showModal();
  }

  function closePanels() {
    document.querySelectorAll(".panel").forEach(function (p) { p.hidden = true; });
  }

  function openPanel(id) {
    var panel = document.getElementById(id);
    if (!panel) return;
    closePanels();
    panel.hidden = false;
    if (id === "add-panel") captureSelection(panel);
    var field = panel.querySelector("input[type=search], textarea");
    if (field) field.focus();
  }

  // Offsets of the text selected in the note, in code points (what the server's offsets count),
  // measured over the note's text content (highlights are elements, markers are CSS: no text).
  function codePoints(s) { return Array.from(s).length; }

  function selectionOffsets() {
    var box = document.getElementById("note-text");
    var sel = window.getSelection();
    if (!box || !sel || sel.rangeCount === 0) return null;
    var r = sel.getRangeAt(0);
    if (r.collapsed || !box.contains(r.startContainer) || !box.contains(r.endContainer)) return null;
    var before = document.createRange();
    before.selectNodeContents(box);
    before.setEnd(r.startContainer, r.startOffset);
    var start = codePoints(before.toString());
    var length = codePoints(r.toString());
    return length > 0 ? [start, start + length] : null;
  }

  function captureSelection(panel) {
    var span = selectionOffsets();
    var info = panel.querySelector("[data-evidence-info]");
    panel.querySelector("input[name=ev_start]").value = span ? span[0] : "";
    panel.querySelector("input[name=ev_end]").value = span ? span[1] : "";
    if (info) {
      info.textContent = span ? "Evidence: characters " + span[0] + "–" + span[1] + " of the note."
                              : "No text selected: the code is added without evidence.";
    }
  }

  function pressForm(action) {
    var f = document.querySelector(".code-row.selected form[data-action=" + action + "]");
    if (f) f.requestSubmit();
  }

  function moveCode(step) {
    var rows = Array.prototype.slice.call(document.querySelectorAll(".code-row"));
    if (!rows.length) return;
    var i = rows.findIndex(function (r) { return r.classList.contains("selected"); });
    var next = rows[Math.max(0, Math.min(rows.length - 1, i + step))];
    var link = next && next.querySelector("a.select-code");
    if (link && next !== rows[i]) window.location.assign(link.href);
  }

  function moveQueue(step) {
    var rows = Array.prototype.slice.call(document.querySelectorAll("tr.queue-row"));
    if (!rows.length) return;
    var i = rows.findIndex(function (r) { return r.classList.contains("current"); });
    rows.forEach(function (r) { r.classList.remove("current"); });
    var next = rows[i < 0 ? 0 : Math.max(0, Math.min(rows.length - 1, i + step))];
    next.classList.add("current");
    next.scrollIntoView({ block: "nearest" });
  }

  function openQueueRow() {
    var row = document.querySelector("tr.queue-row.current") || document.querySelector("tr.queue-row");
    if (!row) return;
    // A reviewer opens a free note by claiming it (a POST with the CSRF token); others just read it.
    var claim = row.querySelector("form.claim-note");
    if (claim) claim.requestSubmit(); else window.location.assign(row.getAttribute("data-href"));
  }

  function click(id) {
    var el = document.getElementById(id);
    if (el && !el.disabled) el.click();
  }

  var noteKeys = {
    "j": function () { moveCode(1); }, "ArrowDown": function () { moveCode(1); },
    "k": function () { moveCode(-1); }, "ArrowUp": function () { moveCode(-1); },
    "a": function () { pressForm("accept"); }, "1": function () { pressForm("accept"); },
    "r": function () { pressForm("reject"); }, "2": function () { pressForm("reject"); },
    "c": function () { openPanel("replace-panel"); }, "3": function () { openPanel("replace-panel"); },
    "p": function () { openPanel("query-panel"); }, "4": function () { openPanel("query-panel"); },
    "n": function () { openPanel("add-panel"); }, "5": function () { openPanel("add-panel"); },
    "s": function () { click("submit-note"); },
    "h": function () { var f = document.getElementById("claim-form"); if (f) f.requestSubmit(); },
    "x": function () { var f = document.getElementById("release-form"); if (f) f.requestSubmit(); },
    "g": function () { window.location.assign("/queue"); }
  };
  var queueKeys = {
    "j": function () { moveQueue(1); }, "ArrowDown": function () { moveQueue(1); },
    "k": function () { moveQueue(-1); }, "ArrowUp": function () { moveQueue(-1); },
    "o": openQueueRow, "Enter": openQueueRow,
    "/": function () { var f = document.querySelector("#filters input[name=code]"); if (f) f.focus(); }
  };

  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) {
      if (ev.key === "Enter" && ev.target.tagName === "TEXTAREA" && ev.target.form) {
        ev.preventDefault();
        ev.target.form.requestSubmit();
      }
      return;
    }
    if (ev.key === "Escape") { closePanels(); return; }
    if (typing(ev.target)) {
      // Enter in a code search picks the first result instead of posting an empty choice.
      if (ev.key === "Enter" && ev.target.classList.contains("code-search")) {
        ev.preventDefault();
        var first = ev.target.form.querySelector(".search-results button.result");
        if (first) first.click();
      }
      return;
    }
    if (ev.key === "?") { ev.preventDefault(); toggleKeys(); return; }
    var table = document.body.classList.contains("note-page") ? noteKeys
              : document.body.classList.contains("queue-page") ? queueKeys : null;
    var fn = table && table[ev.key];
    if (fn) { ev.preventDefault(); fn(); }
  });

  document.addEventListener("click", function (ev) {
    var t = ev.target.closest("[data-open]");
    if (t) { openPanel(t.getAttribute("data-open")); return; }
    if (ev.target.closest("[data-toggle-keys]")) toggleKeys();
  });

  // A search box's form must not post without a chosen code.
  document.addEventListener("submit", function (ev) {
    var f = ev.target;
    if ((f.id === "replace-panel" || f.id === "add-panel") && !(ev.submitter && ev.submitter.name === "new_code")) {
      ev.preventDefault();
    }
  });
})();
