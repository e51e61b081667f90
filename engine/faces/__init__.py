"""Face detectors (registry) and the face crop shared by the engine and training."""

from engine.faces import haar, retinaface  # noqa: F401  (registration)
from engine.faces.base import (
    DetectionSettings,
    FaceDetector,
    FaceDetectorCfg,
    create_face_detector,
    face_detector_cfg,
    list_face_detectors,
    register_face_detector,
)
from engine.faces.crop import DEFAULT_BOX_SCALE, crop_faces, enlarge_boxes, resize_images

__all__ = [
    "DEFAULT_BOX_SCALE",
    "DetectionSettings",
    "FaceDetector",
    "FaceDetectorCfg",
    "create_face_detector",
    "crop_faces",
    "enlarge_boxes",
    "face_detector_cfg",
    "list_face_detectors",
    "register_face_detector",
    "resize_images",
]
