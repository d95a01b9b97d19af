"""Training crops: every labelled image framed by :mod:`fer8.pipeline.faces`, cached on disk.

Detecting and aligning 30,000 images takes minutes, so each crop is written once to a
content-addressed cache: the key is the SHA-256 of the image's bytes together with
everything that shapes the crop (framing constants, crop size, photo or crop, and for
photos the detector and its settings and the labelled box). A second run, or a run with
other training settings, reads the PNGs back instead.

An image in which no face is found is remembered as such (an empty ``.none`` file) and
counted; an unreadable image is reported by name and left out. Neither stops the run.

For training that masks faces at random (``mask="random"``) each crop is kept unmasked
with its contour mask as the PNG's alpha channel (under a key of its own), and in memory
as bits: the masked draws need no second copy of the crops.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fer8.errors import Fer8Error
from fer8.pipeline import alignment, masking
from fer8.pipeline.detection import DEFAULT_DETECTOR, load_detectors, settings
from fer8.pipeline.faces import face_from_crop, faces_in_photo, labelled_face
from fer8.pipeline.landmarking import load_landmark_model
from fer8.training.datasets import Sample

logger = logging.getLogger(__name__)

#: Bump when the framing code changes in a way its constants do not show.
PIPELINE_VERSION = 1
#: Side of cached crops: the size ``fer8 predict`` aligns to before resizing for the model.
CROP_SIZE = 224


@dataclass(frozen=True)
class PreparedCrops:
    """Crops of a sample list, in the same order.

    Attributes:
        images: ``uint8`` (N, S, S, C) for the samples that gave a face; C is 1 when
            every crop is grayscale (FER2013), which keeps a 30k-image set in 1.4 GB at 224.
        kept: Indices into the sample list of the rows of ``images``.
        status: How each sample went: ``aligned``, ``whole`` (used without landmarks),
            ``no face``, ``unreadable``.
        masks: With ``mask="random"``: each crop's contour mask (1 inside the face; all
            ones for a crop without landmarks), packed 8 pixels a byte along the rows
            (:func:`pack_masks`), 1/24 of the crops' memory; else None.
    """

    images: NDArray[np.uint8]
    kept: NDArray[np.int64]
    status: Counter = field(default_factory=Counter)
    masks: NDArray[np.uint8] | None = None

    def rgb(self) -> NDArray[np.uint8]:
        """``images`` with three channels, as :func:`fer8.classify` takes them."""
        return self.images if self.images.shape[-1] == 3 else np.repeat(self.images, 3, -1)


def settings_key(
    size: int = CROP_SIZE, detector: Mapping | None = None, mask: str | None = None
) -> str:
    """A digest of everything that decides how a crop looks.

    ``detector`` (name and every setting) shapes photos only; pre-cropped faces are
    never searched, so their key leaves it out and their crops are shared between
    detectors. ``mask`` (:mod:`fer8.pipeline.masking`) enters the key only when set,
    so unmasked crops keep the keys they always had; ``random`` crops (unmasked, their
    contour mask as alpha) have keys of their own, so no other run misreads them.
    """
    values: dict = {
        "pipeline": PIPELINE_VERSION,
        "size": size,
        "eye_x": alignment.EYE_X,
        "eye_y": alignment.EYE_Y,
        "margin": alignment.FALLBACK_MARGIN,
    }
    if detector is not None:
        values["detector"] = dict(detector)
    if mask is not None:
        values["mask"] = {"kind": mask, "forehead": masking.FOREHEAD}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


class CropCache:
    """Crops on disk under ``root/<settings key>/<2 hex>/<image digest>-<photo|crop>.png``
    (photos with a labelled box: ``<digest>-photo-<x>_<y>_<w>_<h>.png``)."""

    def __init__(
        self,
        root: str | os.PathLike,
        size: int = CROP_SIZE,
        detector: str = DEFAULT_DETECTOR,
        detector_options: Mapping | None = None,
        mask: str | None = None,
    ) -> None:
        self.mask = mask
        self.crops = Path(root) / settings_key(size, mask=mask)
        framing = {"name": detector, **settings(detector, **(detector_options or {}))}
        self.photos = Path(root) / settings_key(size, framing, mask=mask)

    def path(self, sample: Sample, content: bytes) -> Path:
        digest = hashlib.sha256(content).hexdigest()
        if sample.cropped:
            return self.crops / digest[:2] / f"{digest}-crop.png"
        box = "" if sample.box is None else "-" + "_".join(map(str, sample.box.to_list()))
        return self.photos / digest[:2] / f"{digest}-photo{box}.png"

    def get(self, path: Path) -> tuple[str, NDArray[np.uint8] | None] | None:
        """(status, crop) from the cache, or None when this image was never prepared."""
        if path.with_suffix(".none").exists():
            return "no face", None
        if not path.exists():
            return None
        from PIL import Image

        with Image.open(path) as image:
            status = image.info.get("fer8", "aligned")
            return status, np.asarray(image.convert("RGBA" if self.mask == "random" else "RGB"))

    def put(self, path: Path, status: str, crop: NDArray[np.uint8] | None) -> None:
        from PIL import Image, PngImagePlugin

        path.parent.mkdir(parents=True, exist_ok=True)
        if crop is None:
            path.with_suffix(".none").touch()
            return
        info = PngImagePlugin.PngInfo()
        info.add_text("fer8", status)
        partial = path.with_name(path.name + ".partial")
        Image.fromarray(crop).save(partial, format="PNG", pnginfo=info, compress_level=1)
        os.replace(partial, path)  # a killed run never leaves half a PNG under the real name


def frame(
    sample: Sample,
    landmark_model=None,
    size: int = CROP_SIZE,
    content: bytes | None = None,
    detector: str = DEFAULT_DETECTOR,
    detector_options: Mapping | None = None,
    mask: str | None = None,
) -> tuple[str, NDArray[np.uint8] | None]:
    """(status, crop) for one sample through the prediction pipeline's framing.

    Photos keep their labelled face (:func:`~fer8.pipeline.faces.labelled_face`) or, without a
    box, their largest face (the label is the photo's); crops are framed with
    :func:`~fer8.pipeline.faces.face_from_crop`. ``content``: the file's bytes, if already read.
    ``mask``: cut the face out as :func:`fer8.classify` does for a model that masks;
    ``random``: the crop unmasked, with its contour mask (:func:`~fer8.pipeline.masking.
    contour_mask`; all 255 without landmarks) as a fourth, alpha channel of 0 or 255.
    """
    image = sample.load(content)
    framing = {
        "detector": detector,
        "detector_options": detector_options,
        "landmark_model": landmark_model,
        "size": size,
    }
    if sample.cropped:
        _, face = face_from_crop(image, landmark_model=landmark_model, size=size)
    elif sample.box is not None:
        _, face = labelled_face(image, sample.box, **framing)
    else:
        faces = faces_in_photo(image, max_faces=1, **framing)
        if not faces:
            return "no face", None
        face = faces[0][1]
    status = "aligned" if face.aligned else "whole"
    if mask == "random":
        inside = masking.contour_mask(face)
        alpha = np.full(face.image.shape[:2], 255, np.uint8) if inside is None else inside * 255
        return status, np.dstack([face.image, alpha.astype(np.uint8)])
    return status, masking.apply_mask(face, mask).image


def prepare_crops(
    samples: Sequence[Sample],
    cache_root: str | os.PathLike | None,
    *,
    image_size: int,
    workers: int = 2,
    on_progress: Callable[[int], None] | None = None,
    detector: str = DEFAULT_DETECTOR,
    detector_options: Mapping | None = None,
    mask: str | None = None,
) -> PreparedCrops:
    """Frame every sample (from the cache where possible) and resize to ``image_size``.

    Args:
        samples: What to prepare.
        cache_root: Cache folder, or None for no cache.
        image_size: Side of the returned crops (the model's input).
        workers: Threads framing images (OpenCV and dlib release the GIL).
        on_progress: Called with the number of samples just finished.
        detector: The detector that frames photos (``fer8 predict`` must use the same
            for its crops to look like the training crops).
        detector_options: Its settings.
        mask: Cut each face out along its landmarks (a model that masks, see
            :attr:`fer8.models.preprocessing.Preprocessing.mask`); ``random``: keep the
            faces as aligned and return their contour masks too
            (:attr:`PreparedCrops.masks`), for training that masks them at random.
    """
    cache = (
        CropCache(cache_root, detector=detector, detector_options=detector_options, mask=mask)
        if cache_root is not None
        else None
    )
    landmark_model = load_landmark_model()
    framing = functools.partial(
        frame,
        landmark_model=landmark_model,
        detector=detector,
        detector_options=detector_options,
        mask=mask,
    )

    def one(sample: Sample) -> tuple[str, NDArray[np.uint8] | None]:
        try:
            if cache is None:
                return framing(sample)
            content = sample.content()
            path = cache.path(sample, content)
            hit = cache.get(path)
            if hit is not None:
                return hit
            status, crop = framing(sample, content=content)
            cache.put(path, status, crop)
            return status, crop
        except (Fer8Error, OSError) as exc:
            logger.warning("%s", exc if sample.source in str(exc) else f"{sample.source}: {exc}")
            return "unreadable", None

    status: Counter[str] = Counter()
    kept: list[int] = []
    # Filled in place: gray until the first colour crop, so a gray set (FER2013) takes a
    # third of the memory and nothing is ever held twice.
    images = np.zeros((len(samples), image_size, image_size, 1), np.uint8)
    masks = (
        np.zeros((len(samples), image_size, (image_size + 7) // 8), np.uint8)
        if mask == "random"
        else None
    )
    with ThreadPoolExecutor(
        max(1, workers), initializer=load_detectors, initargs=(detector,)
    ) as pool:
        for index, (state, crop) in enumerate(pool.map(one, samples)):
            status[state] += 1
            if crop is not None:
                crop = _resize(crop, image_size)
                if masks is not None:
                    # Resized as the crop is: a pixel at least half inside is inside.
                    masks[len(kept)] = pack_masks(crop[..., 3] >= 128)
                    crop = crop[..., :3]
                if images.shape[-1] == 1 and not _is_gray(crop):
                    images = np.repeat(images, 3, axis=-1)
                images[len(kept)] = crop[..., : images.shape[-1]]
                kept.append(index)
            if on_progress is not None:
                on_progress(1)
    if status["no face"]:
        logger.warning(
            "no face found in %d of %d images; they are left out", status["no face"], len(samples)
        )
    return PreparedCrops(
        images[: len(kept)],
        np.asarray(kept, np.int64),
        status,
        None if masks is None else masks[: len(kept)],
    )


def pack_masks(masks: NDArray[np.bool_]) -> NDArray[np.uint8]:
    """Boolean masks (..., S, S) as bits, 8 pixels a byte along each row."""
    return np.packbits(masks, axis=-1)


def unpack_masks(packed: NDArray[np.uint8], size: int) -> NDArray[np.uint8]:
    """:func:`pack_masks`'s (..., S, S) masks back, as uint8 0 or 1 (what multiplies a crop)."""
    return np.unpackbits(packed, axis=-1, count=size)


def _resize(crop: NDArray[np.uint8], size: int) -> NDArray[np.uint8]:
    """Resize like :func:`fer8.classify` does, so training sees the pixels prediction sees."""
    if crop.shape[0] == size:
        return crop
    import cv2

    interpolation = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interpolation)


def _is_gray(crop: NDArray[np.uint8]) -> bool:
    return bool(
        np.array_equal(crop[..., 0], crop[..., 1]) and np.array_equal(crop[..., 0], crop[..., 2])
    )
