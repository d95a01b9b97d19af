#!/usr/bin/env python3
"""A photo's wait while ``fer8 serve`` reads a video, with the video in turns of a network
batch of frames (``ModelRunner``'s default) against the whole video in one turn (how the
server ran videos before).

In process, on the server's model thread (:class:`fer8.serving.runner.ModelRunner`), with
the bundled model: a video of the astronaut moving across 640x360 frames, every frame
sampled, and a photo (the astronaut, 512x512) sent every 0.3 s while it runs.

Usage:
    python scripts/bench_serve_video.py [--frames 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "examples" / "astronaut.png"
sys.path.insert(0, str(ROOT / "tests"))  # the test videos' helpers


def run(predictor, video: bytes, photo: bytes, video_frames: int) -> dict[str, float]:
    from fer8.serving.runner import ModelRunner

    runner = ModelRunner(predictor, video_frames=video_frames)
    try:
        start = time.perf_counter()
        frames = runner.submit_video(video, "clip.avi", {"every_frame": True})
        waits = []
        while not frames.done():
            sent = time.perf_counter()
            runner.submit(photo, "astronaut.png").result()
            waits.append(time.perf_counter() - sent)
            time.sleep(0.3)
        return {
            "video_frames": len(frames.result()),
            "video_s": time.perf_counter() - start,
            "photos": len(waits),
            "photo_p50_s": statistics.median(waits),
            "photo_max_s": max(waits),
        }
    finally:
        runner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100, help="the video's length")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import numpy as np
    from PIL import Image
    from videos import face_of, moving, write_video

    import fer8

    predictor = fer8.Predictor()
    face = face_of(np.asarray(Image.open(PHOTO).convert("RGB")), "astronaut")
    with tempfile.TemporaryDirectory() as folder:
        clip = write_video(Path(folder) / "clip.avi", moving(face, args.frames, step=4))
        video = clip.read_bytes()
    photo = PHOTO.read_bytes()
    sent = time.perf_counter()
    list(predictor.predict_many([photo]))
    results = {"photo_alone_s": time.perf_counter() - sent}
    for name, turn in (("whole video", 10**9), ("turns", predictor.batch_size)):
        results[name] = run(predictor, video, photo, turn)
        print(f"{name:12} {json.dumps(results[name])}", flush=True)
    print(f"photo alone  {results['photo_alone_s']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
