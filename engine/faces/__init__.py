"""Face detectors (registry) and the face crop shared by the engine and training.

The names below are imported on first use (``engine.exports``): ``engine.faces.settings``
is read by the config without torch.
"""

from engine.exports import lazy_exports

_BASE = "engine.faces.base"
_CROP = "engine.faces.crop"
_EXPORTS = {
    "DEFAULT_BOX_SCALE": _CROP,
    "DetectionSettings": "engine.faces.settings",
    "FaceDetector": _BASE,
    "FaceDetectorCfg": _BASE,
    "create_face_detector": _BASE,
    "crop_faces": _CROP,
    "enlarge_boxes": _CROP,
    "face_detector_cfg": _BASE,
    "list_face_detectors": _BASE,
    "register_face_detector": _BASE,
    "resize_images": _CROP,
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
