"""Decision events and how a note's current state is derived from them.

Why events: the issue's audit trail. A decision is never edited in place; each one is a new row
(who, when, the action, the code before and after, and the note's audit fields), and the state a
reviewer sees is a replay of those rows in ``seq`` order. An admin's correction is one more event
(action ``correct``) whose before/after say what it changed, so the replay needs no other table.

How an event changes a code (``code_before`` -> ``code_after``):

=========  ===================  ======================================================
action     before -> after      effect on the code
=========  ===================  ======================================================
accept     c -> c               the code is confirmed
reject     c -> None            the code is dropped
replace    c -> n               the code is dropped and ``n`` takes its place
query      c -> c               the provider is asked (comment = the question); the code is
                                not confirmed, so it is not exported as a label
add        None -> n            a code the model missed
correct    any of the above     admin correction, read by its before/after
submit     None -> None         the note is done (every routed code decided)
=========  ===================  ======================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ACTIONS", "CODE_ACTIONS", "NOTE_ACTIONS", "CodeState", "NoteState", "correction_action", "replay",
]

ACTIONS: tuple[str, ...] = ("accept", "reject", "replace", "query", "add")
"""Per-code decisions a reviewer makes (keys 1-5 of the note page)."""
CODE_ACTIONS = ACTIONS
NOTE_ACTIONS: tuple[str, ...] = ("submit", "correct")
"""``submit`` closes a note; ``correct`` is an admin's correction of a submitted note."""


@dataclass
class CodeState:
    """The latest decision on one code (None: undecided)."""

    current: str | None = None
    replaced_by: str | None = None
    comment: str | None = None
    decided_by: str | None = None
    evidence: list[dict[str, Any]] | None = None


@dataclass
class NoteState:
    """A note's state after replaying its events."""

    codes: dict[str, CodeState] = field(default_factory=dict)
    added: dict[str, CodeState] = field(default_factory=dict)
    submitted: bool = False
    submitted_by: str | None = None
    version: int = 0

    def on_note(self, code: str) -> bool:
        """Whether ``code`` is a code of the note a decision may name (predicted or added)."""
        return code in self.codes or code in self.added

    def state(self, code: str) -> CodeState:
        return self.codes[code] if code in self.codes else self.added[code]

    def n_decided(self, routed: Iterable[str]) -> int:
        return sum(1 for c in routed if self.codes.get(c, CodeState()).current is not None)

    def undecided(self, routed: Iterable[str]) -> list[str]:
        return [c for c in routed if self.codes.get(c, CodeState()).current is None]

    def final_codes(self, predicted: Sequence[tuple[str, str]]) -> list[str]:
        """The note's labels: ``predicted`` is ``(code, model decision)`` in display order.

        An undecided code keeps the model's decision (auto-accepted codes stay); a queried code
        is left out (not confirmed); added codes come last. Duplicates are removed."""
        out: list[str] = []
        for code, decision in predicted:
            st = self.codes.get(code, CodeState())
            if (st.current is None and decision == "auto_accept") or st.current == "accept":
                out.append(code)
            elif st.current == "replace" and st.replaced_by:
                out.append(st.replaced_by)
        for code, st in self.added.items():
            if st.current in ("add", "accept"):
                out.append(code)
            elif st.current == "replace" and st.replaced_by:
                out.append(st.replaced_by)
        return list(dict.fromkeys(out))


def correction_action(code_before: str | None, code_after: str | None) -> str:
    """The decision a ``correct`` event amounts to, read from its before/after codes."""
    if code_before is None:
        return "add"
    if code_after is None:
        return "reject"
    return "accept" if code_after == code_before else "replace"


def replay(predicted: Iterable[str], events: Iterable[Any]) -> NoteState:
    """Fold ``events`` (rows with ``seq``, ``action``, ``code``, ``code_before``, ``code_after``,
    ``comment``, ``username``, ``evidence`` as a list or None) over the ``predicted`` codes."""
    state = NoteState(codes={c: CodeState() for c in predicted})
    for ev in sorted(events, key=lambda e: e.seq):
        state.version = max(state.version, ev.seq)
        action = ev.action
        if action == "submit":
            state.submitted, state.submitted_by = True, ev.username
            continue
        if action == "correct":
            action = correction_action(ev.code_before, ev.code_after)
        if action == "add":
            target = ev.code_after
            state.added[target] = CodeState("add", None, ev.comment, ev.username, ev.evidence)
            continue
        code = ev.code_before
        new = CodeState(action, ev.code_after if action == "replace" else None, ev.comment, ev.username,
                        ev.evidence)
        if code in state.codes:
            state.codes[code] = new
        else:
            state.added[code] = new
    return state
