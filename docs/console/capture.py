"""Captures the README's console pictures from the running console.

Starts `recserve tui` in a real pseudo-terminal against a running server, sends it some
traffic so that the charts have something to show, then visits each screen by keyboard
and presses ctrl+s, the console's own screenshot key (SVG). Run it against a server that
`make run` trained:

    make run                       # in one terminal (keeps serving)
    .venv/bin/python docs/console/capture.py --target 127.0.0.1:50051
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from shared.proto.recserve.v1 import recommender_pb2 as pb  # noqa: E402
from shared.proto.recserve.v1 import recommender_pb2_grpc  # noqa: E402
from tests.support.terminal import Terminal  # noqa: E402


def traffic(target: str, stop: threading.Event) -> None:
    """Recommend for random users, and now and then a Feedback event."""
    rng = random.Random(7)
    with grpc.insecure_channel(target) as channel:
        stub = recommender_pb2_grpc.RecommenderStub(channel)
        n = 0
        while not stop.is_set():
            user = f"u{rng.randrange(2000):05d}"
            stub.Recommend(pb.RecommendRequest(user_id=user, k=10), timeout=5)
            if n % 5 == 0:
                item = f"i{rng.randrange(20):03d}-{rng.randrange(30):03d}"
                event = pb.Event(event_id=f"capture-{time.time_ns()}", user_id=user, item_id=item)
                stub.Feedback(pb.FeedbackRequest(events=[event]), timeout=5)
            n += 1
            time.sleep(rng.uniform(0.002, 0.02) * (2 + (n // 400) % 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--warmup", type=float, default=90.0, help="seconds of traffic first")
    args = parser.parse_args()
    out = Path(__file__).parent
    stop = threading.Event()
    load = threading.Thread(target=traffic, args=(args.target, stop), daemon=True)
    load.start()
    time.sleep(args.warmup)
    env = {**os.environ, "RECSERVE_SCREENSHOT_DIR": str(out)}
    terminal = Terminal(
        [sys.executable, "-m", "recserve", "tui", "--target", args.target],
        env=env,
        columns=150,
        lines=44,
    )
    try:
        terminal.wait_for("SERVING", 30)
        terminal.pump(3)
        steps = [
            ("1", "Replicas", []),
            ("2", "pop ndcg@10", []),
            ("3", "training loss", []),
            ("4", "Recommendations", ["/", *"u00042", "enter"]),
            ("5", "search item", ["/", *"topic 3", "escape"]),
        ]
        for key, marker, keys in steps:
            terminal.press(key)
            terminal.wait_for(marker)
            if keys:
                terminal.press(*keys)
            terminal.pump(2)
            terminal.press("ctrl+s")
            terminal.wait_for("saved", 10)
            terminal.pump(4)  # the notification fades before the next picture
        terminal.press("q")
        terminal.wait_exit()
    finally:
        terminal.close()
        stop.set()
    print("\n".join(str(p) for p in sorted(out.glob("console-*.svg"))))


if __name__ == "__main__":
    main()
