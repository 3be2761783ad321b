"""Reading a job's log as it grows (the CLI's --wait, the demo, the console)."""

from __future__ import annotations


def unseen_lines(log: list[str], last: str | None) -> list[str]:
    """The job-log lines after ``last`` (the last one shown). The job row keeps only
    the newest lines, so a position would stop advancing once the log is full."""
    if last is None or last not in log:
        return list(log)
    return log[len(log) - log[::-1].index(last) :]
