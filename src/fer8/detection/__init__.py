"""Face detection."""

from fer8.detection.haar import detect, load_detectors, verify_face

__all__ = ["detect", "load_detectors", "verify_face"]
