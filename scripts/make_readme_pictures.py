"""Make the README's pictures from the bundled example photos, with the bundled model.

    python scripts/make_readme_pictures.py [--out docs/pictures]

Writes, so that the README shows what fer8 prints today rather than a mock-up:

* ``faces.jpg``: the two example portraits side by side, as one photo with two faces,
  annotated as ``fer8 predict --annotate`` draws it;
* ``timeline.png``: ``fer8 predict --annotate``'s timeline of a 4-second clip made from
  the two portraits (each slides sideways, then a cut from one to the other: two tracks);
* ``explain.jpg``: the same photo with each face's heatmap, as ``--explain`` draws it.

Run it again after changing the bundled model or the drawing code, and commit the files.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
HEIGHT = 360  # of the combined photo: small files, faces still large enough to read

logger = logging.getLogger("make_readme_pictures")


def side_by_side(height: int = HEIGHT):
    """The two example portraits scaled to one height, in one RGB array."""
    from PIL import Image

    import fer8

    parts = []
    for name in ("astronaut.png", "grace_hopper.jpg"):
        image = Image.fromarray(fer8.load_image(EXAMPLES / name))
        width = round(image.width * height / image.height)
        parts.append(np.asarray(image.resize((width, height), Image.Resampling.LANCZOS)))
    return np.concatenate(parts, axis=1)


def write_clip(path: Path, photo, seconds: float = 4.0, fps: int = 10) -> Path:
    """A clip of the photo's two halves: each slides sideways for half the clip."""
    import cv2

    half = photo.shape[1] // 2
    halves = [photo[:, :half], photo[:, half : 2 * half]]
    size = (half + 60, photo.shape[0])
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    frames = int(seconds * fps)
    for i in range(frames):
        part = halves[0] if i < frames // 2 else halves[1]
        shift = 2 * (i % (frames // 2))
        frame = cv2.copyMakeBorder(part, 0, 0, shift, 60 - shift, cv2.BORDER_CONSTANT)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "pictures")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import fer8
    from fer8.pipeline.timeline import Timeline

    args.out.mkdir(parents=True, exist_ok=True)
    predictor = fer8.Predictor()
    photo = side_by_side()

    result = predictor.predict(photo)
    result.save(args.out / "faces.jpg", photo)
    logger.info("faces.jpg: %s", ", ".join(f"{f.label} {f.confidence:.1%}" for f in result.faces))

    explained = fer8.ExplainedResult.of("two portraits", predictor.explain(photo))
    explained.save(args.out / "explain.jpg", photo)
    logger.info("explain.jpg: %d heatmaps", len(explained.explanations))

    with tempfile.TemporaryDirectory() as folder:
        clip = write_clip(Path(folder) / "clip.mp4", photo)
        timeline = Timeline(predictor.labels).extend(predictor.predict_video(clip, fps=5))
    timeline.plot(args.out / "timeline.png", title="two portraits, a cut between them")
    for track in timeline.tracks:
        logger.info("timeline.png: face %d: %s", track, timeline.summary(track))


if __name__ == "__main__":
    main()
