"""Test videos made from the example photos, written with OpenCV as a user's camera would.

Each scene is a list of RGB frames on a plain 640x360 background; :func:`write_video`
writes them as MPEG-4 (``mp4v``, .mp4), Motion JPEG (``MJPG``, .avi) or VP8 (.webm, which
browsers play); :func:`write_y4m` as raw Y4M, the file a fake camera of Chromium's shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 640, 360
RATE = 10.0  # frames per second of every test video
BACKGROUND = 60


def write_video(path: Path, frames: list[np.ndarray], rate: float = RATE) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = {".avi": "MJPG", ".webm": "VP80"}.get(path.suffix, "mp4v")
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), rate, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_y4m(path: Path, frames: list[np.ndarray], rate: int = int(RATE)) -> Path:
    """Raw 4:2:0 frames in a YUV4MPEG2 file (``--use-file-for-fake-video-capture``)."""
    import cv2

    height, width = frames[0].shape[:2]
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{rate}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def face_of(photo: np.ndarray, which: str) -> np.ndarray:
    """The head and shoulders of an example photo, about 200 pixels a side."""
    import cv2

    if which == "astronaut":  # face at about (178, 63, 90, 113) of 512x512
        crop = photo[20:260, 110:340]
    else:  # grace_hopper: face at about (183, 120, 170, 213) of 512x600
        crop = photo[60:400, 120:410]
    scale = 220 / crop.shape[0]
    return cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def blank() -> np.ndarray:
    return np.full((HEIGHT, WIDTH, 3), BACKGROUND, np.uint8)


def place(frame: np.ndarray, face: np.ndarray, x: int, y: int = 70) -> np.ndarray:
    h, w = face.shape[:2]
    frame[y : y + h, x : x + w] = face[: HEIGHT - y, : WIDTH - x]
    return frame


def moving(face: np.ndarray, frames: int = 20, step: int = 12) -> list[np.ndarray]:
    """One face moving left to right, ``step`` pixels a frame."""
    return [place(blank(), face, 20 + step * i) for i in range(frames)]


def crossing(face: np.ndarray, frames: int = 100, step: int = 6) -> list[np.ndarray]:
    """One face crossing the picture, ``step`` pixels a frame: half out of it on the left
    at first, partly out on the right at the end (written at 25 fps: a 4 s clip)."""
    height, width = face.shape[:2]
    pictures = []
    for i in range(frames):
        x = step * i - width // 2
        picture = blank()
        left, right = max(0, x), min(WIDTH, x + width)
        picture[70 : 70 + height, left:right] = face[: HEIGHT - 70, left - x : right - x]
        pictures.append(picture)
    return pictures


def two_faces(left: np.ndarray, right: np.ndarray, frames: int = 12) -> list[np.ndarray]:
    """Two faces side by side, each drifting slowly towards the middle."""
    return [
        place(place(blank(), left, 10 + 3 * i), right, WIDTH - right.shape[1] - 10 - 3 * i)
        for i in range(frames)
    ]


def cut(face: np.ndarray) -> list[np.ndarray]:
    """A face for 1 s, a face-free picture for 2 s, then the face again, elsewhere, 1 s."""
    return (
        [place(blank(), face, 40) for _ in range(10)]
        + [blank() for _ in range(20)]
        + [place(blank(), face, 380) for _ in range(10)]
    )


def swap(first: np.ndarray, second: np.ndarray, x: int = 200) -> list[np.ndarray]:
    """One face for 1 s, then another in its place for 1 s: a cut that only the face shows
    (the two example portraits' boxes overlap at IoU 0.49)."""
    return [place(blank(), first, x) for _ in range(10)] + [
        place(blank(), second, x) for _ in range(10)
    ]


def new_shot(face: np.ndarray, x: int = 200) -> list[np.ndarray]:
    """A face on the plain background for 1 s, then the same face at the same place in
    front of light, wide stripes (a new room) for 1 s: a scene cut."""
    behind = np.where((np.arange(WIDTH) // 40 % 2 == 0)[None, :, None], 210, 140)
    behind = np.broadcast_to(behind, (HEIGHT, WIDTH, 3)).astype(np.uint8)
    return [place(blank(), face, x) for _ in range(10)] + [
        place(behind.copy(), face, x) for _ in range(10)
    ]


def truncate(path: Path) -> Path:
    """Cut a written video's bytes in half."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def enters(staying: np.ndarray, entering: np.ndarray, at: int = 3, frames: int = 12) -> list:
    """One face throughout on the left; another appears on the right from frame ``at``."""
    right = WIDTH - entering.shape[1] - 10
    return [
        place(blank(), staying, 10)
        if i < at
        else place(place(blank(), staying, 10), entering, right)
        for i in range(frames)
    ]
