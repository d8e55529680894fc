"""TensorRT-compatibility linter for ONNX models (``mmg-export lint``); rules live in ``rules``."""
from importlib import resources

DEFAULT_VERSION = "10.3"  # JetPack 6
_PREFIX, _SUFFIX = "trt_ops_", ".json"


def supported_versions() -> tuple[str, ...]:
    """TensorRT versions with a packaged operator table (``trt_ops_<version>.json``), oldest first."""
    names = (entry.name for entry in resources.files(__name__).iterdir())
    versions = [n[len(_PREFIX):-len(_SUFFIX)] for n in names if n.startswith(_PREFIX) and n.endswith(_SUFFIX)]
    return tuple(sorted(versions, key=lambda v: tuple(int(part) for part in v.split("."))))
