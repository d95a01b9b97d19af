"""Face detectors compared: recall on ExpW, false faces on face-free pictures, speed.

For each detector (YuNet, fer8's default, with its coarse pass and without it, as before,
and the Haar cascade with its HOG check):

* **recall** on ExpW's labelled faces: a face counts as found when a detected box
  overlaps its labelled box at IoU >= 0.3 (the rule ``fer8 evaluate`` uses; ExpW's boxes
  come from another detector and frame faces differently);
* **false faces** on scikit-image's face-free pictures;
* **found** on the example portraits, the two side by side, and every JAFFE photo;
* **time**: p50 of ``fer8.detect`` on the 512x512 astronaut, on a 1280x720 frame with
  two faces (``bench_video.py``'s), and over the ExpW photos;
* with ``--scale 2``, recall and time again on ExpW's photos at twice their size (up to
  512 px), where YuNet's coarse pass runs (ExpW's own photos are at most 256 px);
* with ``--compare-opencv``, YuNet's faces as fer8 finds them on ONNX Runtime
  (:mod:`fer8.pipeline.detection.yunet_network`) against OpenCV's ``FaceDetectorYN`` on
  every picture above, at the scores 0.6 (the default) and 0.3 (the coarse pass's), with
  the CPU time each takes.

Usage::

    python scripts/bench_detect.py --expw EXPW_DIR --jaffe JAFFE_DIR [--limit N] [--scale 2]
        [--compare-opencv]

(the folders of ``../shared/data/expw.tar.gz`` and ``jaffe.tar.gz``, extracted).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import fer8
from fer8.pipeline.detection import load_detectors
from fer8.pipeline.faces import match
from fer8.pipeline.images import iter_image_files
from fer8.training.datasets import read_dataset

ROOT = Path(__file__).resolve().parents[1]
#: scikit-image's sample pictures without a face (its "camera" and "astronaut" have one).
FACE_FREE = (
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "horse.png",
    "moon.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "coins.png",
    "hubble_deep_field.jpg",
    "page.png",
    "text.png",
    "clock_motion.png",
    "logo.png",
    "chessboard_RGB.png",
    "color.png",
    "retina.jpg",
    "ihc.png",
    "motorcycle_left.png",
    "cell.png",
)


#: What is compared: name -> (detector, settings).
CONFIGURATIONS = {
    "yunet": ("yunet", {}),
    "yunet-full": ("yunet", {"coarse": False}),  # the search before the coarse pass
    "haar": ("haar", {}),
}


def cv2_resize(image: np.ndarray, height: int) -> np.ndarray:
    import cv2

    scale = height / image.shape[0]
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def face_free_pictures() -> dict[str, np.ndarray]:
    """scikit-image's face-free sample pictures, by file name."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    return {name: fer8.load_image(folder / name) for name in FACE_FREE if (folder / name).is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--expw", type=Path, required=True)
    parser.add_argument("--jaffe", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=0, help="ExpW faces (0: all)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="also search ExpW's photos resized by this much (2: up to 512 px, where "
        "YuNet's coarse pass runs)",
    )
    parser.add_argument("--detectors", default="yunet,yunet-full,haar")
    parser.add_argument("--compare-opencv", action="store_true")
    args = parser.parse_args()

    expw = read_dataset(args.expw).samples
    if args.limit:
        expw = expw[:: max(1, len(expw) // args.limit)][: args.limit]
    photos = [(sample.load(), sample.box) for sample in expw]
    if args.scale != 1.0:
        import cv2

        photos += [
            (
                cv2.resize(
                    image, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_LINEAR
                ),
                fer8.Box(*(round(args.scale * v) for v in box.to_list())),
            )
            for image, box in photos
        ]
    free = face_free_pictures()
    astronaut = fer8.load_image(ROOT / "examples" / "astronaut.png")
    hopper = fer8.load_image(ROOT / "examples" / "grace_hopper.jpg")
    portraits = {
        "astronaut": astronaut,
        "grace_hopper": hopper,
        "side by side": np.ascontiguousarray(np.concatenate([astronaut, hopper[:512]], axis=1)),
    }
    jaffe = [fer8.load_image(p) for p in iter_image_files([args.jaffe])]
    frame = np.full((720, 1280, 3), 90, np.uint8)  # scripts/bench_video.py's picture
    for face, x in ((astronaut[20:260, 110:340], 120), (hopper[60:400, 120:410], 760)):
        face = cv2_resize(face, 300)
        frame[180:480, x : x + face.shape[1]] = face
    print(f"ExpW faces: {len(expw)}; face-free pictures: {len(free)}; JAFFE photos: {len(jaffe)}")
    if args.compare_opencv:
        pictures = [image for image, _ in photos] + [*free.values(), *portraits.values(), frame]
        compare_opencv(pictures + jaffe)
    for name in args.detectors.split(","):
        detector, options = CONFIGURATIONS[name]
        load_detectors(detector)
        for scale, part in (
            (1.0, photos[: len(expw)]),
            (args.scale, photos[len(expw) :]),
        ):
            if not part:
                continue
            found, seconds = 0, []
            for image, box in part:
                start = time.perf_counter()
                boxes = fer8.detect(image, detector, **options)
                seconds.append(time.perf_counter() - start)
                found += match(box, boxes) is not None
            print(
                f"{name}: ExpW at {scale:g}x, recall (IoU >= 0.3): {found / len(part):.1%} "
                f"({found} of {len(part)}); {1000 * np.median(seconds):.2f} ms p50, "
                f"{1000 * np.mean(seconds):.2f} ms mean per photo"
            )
        false = {n: len(fer8.detect(image, detector, **options)) for n, image in free.items()}
        portraits_found = {
            n: len(fer8.detect(image, detector, **options)) for n, image in portraits.items()
        }
        jaffe_found = sum(len(fer8.detect(image, detector, **options)) == 1 for image in jaffe)
        for picture, image in (("astronaut (512x512)", astronaut), ("two faces, 1280x720", frame)):
            timings = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                fer8.detect(image, detector, **options)
                timings.append(time.perf_counter() - start)
            print(f"  {picture}: {1000 * np.median(timings):.2f} ms p50 over {args.repeats}")
        print(
            f"  false faces on {len(free)} face-free pictures: {sum(false.values())} "
            f"{ {k: v for k, v in false.items() if v} or '' }"
        )
        print(
            f"  faces on the portraits: {portraits_found}; JAFFE photos with exactly one "
            f"face: {jaffe_found} of {len(jaffe)}"
        )


def compare_opencv(pictures: list[np.ndarray]) -> None:
    """YuNet's rows from fer8's ONNX Runtime session against ``cv2.FaceDetectorYN``'s on
    each picture at its own size: how many pictures give the same number of faces, the
    largest difference in a row (pixels, or score), and the CPU time of each."""
    import cv2

    from fer8.pipeline.detection import yunet, yunet_network

    model = yunet.model_path()
    opencv = cv2.FaceDetectorYN.create(str(model), "", (320, 320), 0.6, 0.3, 5000)
    same, largest, cpu = 0, 0.0, {"onnxruntime": 0.0, "opencv": 0.0}
    for threshold in (0.6, 0.3):
        opencv.setScoreThreshold(threshold)
        for picture in pictures:
            start = time.process_time()
            ours = yunet_network.detect_rows(picture, model, threshold, 0.3)
            cpu["onnxruntime"] += time.process_time() - start
            start = time.process_time()
            opencv.setInputSize((picture.shape[1], picture.shape[0]))
            _, theirs = opencv.detect(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            cpu["opencv"] += time.process_time() - start
            theirs = np.zeros((0, 15), np.float32) if theirs is None else theirs
            if ours.shape == theirs.shape:
                same += 1
                largest = max(largest, float(np.abs(ours - theirs).max(initial=0.0)))
    calls = 2 * len(pictures)
    print(
        f"YuNet on ONNX Runtime against OpenCV's FaceDetectorYN, {len(pictures)} pictures at "
        f"scores 0.6 and 0.3: the same faces in {same} of {calls}, rows within {largest:.2g}; "
        f"CPU ms a picture: ONNX Runtime {1000 * cpu['onnxruntime'] / calls:.2f}, "
        f"OpenCV {1000 * cpu['opencv'] / calls:.2f}"
    )


if __name__ == "__main__":
    main()
