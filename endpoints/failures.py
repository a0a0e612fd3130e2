"""A failed job's error as a person needs it: what failed, why (in words), then the evidence.

A job's error (Job.error) is written for completeness: a deployment's names the replica and carries the
end of its log ("Its log ends with:"), a build's carries the end of the build log ("--- build log (last
lines) ---"), and a note may follow the log ("Revision 1 of blue keeps serving."). Read in that order the
cause sits lines down, inside JSON. `explain` splits it: the sentence that says what failed, the first
line of the log that says why, the notes, and the log lines themselves for a folded part of the page.
"""

import re
from dataclasses import dataclass, field

from endpoints.loglines import LogLine, cause_of, first_error, parse

LOG_MARKERS = ("Its log ends with:", "--- build log (last lines) ---")
# A cause that ends with a colon says why on the lines after it; at most this many are taken.
CONTINUATION_LINES = 4
NOTE_RES = (re.compile(r"^Revision \d+ of \S+ keeps serving\.$"),)


@dataclass
class Failure:
    summary: str
    cause: str = ""
    notes: list[str] = field(default_factory=list)
    lines: list[LogLine] = field(default_factory=list)
    # The part of the message that is neither summary nor log (a plain message's further lines).
    detail: str = ""


def explain(error: str) -> Failure:
    """`error` taken apart; `cause` is empty when no line of it says more than the summary."""
    head, log_text = error, ""
    for marker in LOG_MARKERS:
        if marker in error:
            head, _, log_text = error.partition(marker)
            break
    notes, kept = [], []
    for raw in log_text.splitlines():
        (notes if any(pattern.match(raw.strip()) for pattern in NOTE_RES) else kept).append(raw)
    head_lines = [line for line in head.strip().splitlines() if line.strip()]
    for raw in list(head_lines[1:]):
        if any(pattern.match(raw.strip()) for pattern in NOTE_RES):
            head_lines.remove(raw)
            notes.append(raw.strip())
    summary = head_lines[0] if head_lines else "The job failed."
    detail = "\n".join(head_lines[1:])
    lines = parse("\n".join(kept))
    found = first_error(lines)
    if found is None:
        lines_of_detail = parse(detail)
        found = first_error(lines_of_detail)
    else:
        lines_of_detail = lines
    cause = cause_of(found) if found else ""
    if cause.endswith(":"):
        # `× No solution found when resolving dependencies:` says why on the line after it.
        following = lines_of_detail[lines_of_detail.index(found) + 1 :]
        said = []
        for line in following[:CONTINUATION_LINES]:
            # The reason's own line, then the lines that continue it (indented, no marker of their own).
            if said and (not line.raw.startswith((" ", "\t")) or line.is_error or "─▶" in line.raw):
                break
            said.append(cause_of(line).lstrip("╰─▶| ").strip())
        cause = " ".join([cause, *said])
    if cause and cause in summary:
        cause = ""
    return Failure(summary=summary, cause=cause, notes=notes, lines=lines, detail=detail)
