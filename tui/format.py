"""How the console writes times, sizes and progress."""

from __future__ import annotations

from datetime import UTC, datetime


def when(ms: int) -> str:
    """Unix epoch milliseconds as UTC date and time; "-" for 0."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def ago(ms: int, now_ms: int) -> str:
    if not ms:
        return "-"
    seconds = max(0, (now_ms - ms) // 1000)
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def progress_bar(fraction: float, width: int = 16) -> str:
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return "█" * filled + "░" * (width - filled) + f" {fraction * 100:5.1f}%"
