"""Library versions: which are installed (recorded by ``mmg-export build`` and ``profile``), and
one way to compare them (:func:`release`, on :mod:`packaging.version`).

Standard library and packaging only: imports without torch (whose version is read from its
package metadata unless it is already imported).
"""
from __future__ import annotations

import importlib
import importlib.util
import platform
import sys
from importlib import metadata

from packaging.version import InvalidVersion, Version

LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime", "onnxscript", "polygraphy", "tensorrt", "tensorrt_rtx",
             "numpy")
"""The libraries whose versions ``mmg-export build`` (the manifest) and ``profile`` (its report) record."""


def release(version: str, parts: int | None = None) -> tuple[int, ...]:
    """The release numbers of a version string, the first ``parts`` of them (all when None), as
    :class:`packaging.version.Version` reads it: ``"10.3.0.30"`` -> (10, 3, 0, 30),
    ``"2.11.0+cu130"`` -> (2, 11, 0), ``"1.24.0.dev20250101"`` -> (1, 24, 0); () for text that is no
    version (PEP 440), which equals no real release.

    Compare the tuples. Same TensorRT release: ``release(a, 3) == release(b, 3)``. At least
    ``"1.23"``: ``release(version, 2) >= (1, 23)``. Within bounds such as ``"10.3"`` to ``"11"``
    (any 11.x): ``release(low) <= release(version)`` and
    ``release(version, len(release(high))) <= release(high)``.
    """
    try:
        return Version(version).release[:parts]
    except InvalidVersion:
        return ()


def library_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Python and every library of ``names`` that is installed (torch's without importing it; as the
    module reports it once imported, with its local build such as +cu130)."""
    versions = {"python": platform.python_version()}
    for name in names:
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            continue
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # onnxruntime-gpu, JetPack's tensorrt: another distribution name
            versions[name] = str(importlib.import_module(name).__version__)
    if getattr(sys.modules.get("torch"), "__version__", None):  # imported (None: blocked)
        versions["torch"] = sys.modules["torch"].__version__
    return versions
