"""Head pose: yaw, pitch and roll in degrees, from a face's 68 landmarks.

Fourteen landmarks (eyebrows, eye corners, nostrils, mouth, chin) are matched to the
same points of a generic 3-D face (:data:`FACE_MODEL`) with ``cv2.solvePnP``; the camera is assumed to be a pinhole with a focal
length of the image's longer side, centred, without distortion. A generic face and a
guessed camera make this an estimate (a few degrees), good for "looking away" or "head
tilted", not for measurement.

Conventions (the photo as seen on screen, x to the right, y down):

* **yaw**: turning left-right about the vertical axis. Positive when the face turns
  towards the right of the picture (the nose points right; for a photo that is not
  mirrored, the subject turns to their own left).
* **pitch**: nodding about the horizontal axis. Positive when the face tilts up (the
  nose points up in the picture).
* **roll**: tilting in the picture plane. Positive when the face is turned clockwise
  on screen (the eye on the picture's right is lower), the same sign as the angle
  :func:`fer8.align` levels the eyes by.

All three are 0 for a face looking straight into the camera. Mirroring a photo negates
yaw and roll and keeps pitch.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from fer8.results import HeadPose

#: iBUG 300-W indices of the points used: the eyebrows' ends, the eye corners, the
#: nostrils' outer edges, the mouth corners, the lower lip's middle and the chin.
POSE_POINTS = (17, 21, 22, 26, 36, 39, 42, 45, 31, 35, 48, 54, 57, 8)

#: The same points on a generic face, in the camera's axes for a face looking into it:
#: x to the picture's right, y down, z away from the camera (units of about a
#: centimetre). From the anthropometric 3-D head model of the University of Coimbra
#: (glAnthropometric3DModel), as lincolnhard/head-pose-estimation uses it with dlib's
#: points, with each axis turned to the camera's direction.
FACE_MODEL = -np.array(
    [
        (6.825897, 6.760612, 4.402142),  # 17 eyebrow, outer end (picture's left)
        (1.330353, 7.122144, 6.903745),  # 21 eyebrow, inner end
        (-1.330353, 7.122144, 6.903745),  # 22 other eyebrow, inner end
        (-6.825897, 6.760612, 4.402142),  # 26 other eyebrow, outer end
        (5.311432, 5.485328, 3.987654),  # 36 eye, outer corner (picture's left)
        (1.789930, 5.393625, 4.413414),  # 39 eye, inner corner
        (-1.789930, 5.393625, 4.413414),  # 42 other eye, inner corner
        (-5.311432, 5.485328, 3.987654),  # 45 other eye, outer corner
        (2.005628, 1.409845, 6.165652),  # 31 nostril (picture's left)
        (-2.005628, 1.409845, 6.165652),  # 35 other nostril
        (2.774015, -2.080775, 5.048531),  # 48 mouth corner (picture's left)
        (-2.774015, -2.080775, 5.048531),  # 54 other mouth corner
        (0.000000, -3.116408, 6.097667),  # 57 lower lip, middle
        (0.000000, -7.415691, 4.070434),  # 8 chin
    ],
    np.float64,
)
_OUTER_EYES = (4, 7)  # rows of FACE_MODEL: the outer eye corners
_NOSE = 8  # a row near the face's centre, for the starting position


def head_pose(landmarks: NDArray[np.floating], image_size: tuple[int, int]) -> HeadPose | None:
    """Estimate the head's yaw, pitch and roll from dlib's 68 landmarks.

    Args:
        landmarks: (68, 2) points in pixels of the image.
        image_size: The image's (width, height), which sets the assumed camera.

    Returns:
        The pose, or None when no pose fits the points (solvePnP fails).
    """
    import cv2

    points = np.asarray(landmarks, np.float64)[list(POSE_POINTS)]
    width, height = image_size
    focal = float(max(width, height))
    camera = np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
    # Start from a frontal face at the distance its eye span gives: solvePnP's iterative
    # solver then converges to the face in front of the camera, never to its mirror
    # image behind it.
    left, right = _OUTER_EYES
    span = float(np.linalg.norm(points[right] - points[left])) or 1.0
    distance = focal * float(FACE_MODEL[right, 0] - FACE_MODEL[left, 0]) / span
    centre = (points[_NOSE] + points[_NOSE + 1]) / 2.0
    rvec = np.zeros((3, 1))
    tvec = np.array(
        [
            [(centre[0] - width / 2.0) * distance / focal],
            [(centre[1] - height / 2.0) * distance / focal],
            [distance],
        ]
    )
    ok, rvec, tvec = cv2.solvePnP(
        FACE_MODEL,
        points,
        camera,
        None,
        rvec,
        tvec,
        useExtrinsicGuess=True,
        flags=cv2.SOLVEPNP_ITERATIVE,
    )
    if not ok:
        return None
    return pose_from_rotation(cv2.Rodrigues(rvec)[0])


def pose_from_rotation(rotation: NDArray[np.float64]) -> HeadPose:
    """Yaw, pitch and roll of a rotation from the face model's axes to the camera's.

    The angles are read off where the face's axes point: yaw and pitch from the
    direction the face looks in (the model's -z), roll from its left-to-right axis (+x)
    seen in the picture plane.
    """
    forward = rotation @ np.array([0.0, 0.0, -1.0])  # (0, 0, -1): towards the camera
    across = rotation @ np.array([1.0, 0.0, 0.0])
    yaw = math.degrees(math.atan2(forward[0], -forward[2]))
    pitch = math.degrees(math.atan2(-forward[1], math.hypot(forward[0], forward[2])))
    roll = math.degrees(math.atan2(across[1], across[0]))
    return HeadPose(yaw, pitch, roll)
