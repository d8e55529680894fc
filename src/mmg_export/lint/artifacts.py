"""Lint an artifact directory: each graph of its manifest against the runtime it is built for.

What a build of each backend makes of the three graphs (:func:`tensorrt_graphs`, which the build's own
lint step uses too):

* ONNX Runtime artifacts run ``preprocess.onnx`` (its uint8 ``Resize``) and ``encoder.onnx`` (opset 23,
  one ``Attention``) under ONNX Runtime only: each is opened as ``run`` opens it (:class:`OrtSession` on
  the manifest's providers, I/O checked against the manifest). ``pruner.onnx`` is opened so too, and
  also passes the TensorRT lint of every table we ship, as the build requires: it is the one pruner
  graph of every backend.
* TensorRT and TensorRT-RTX artifacts hold engines; their ONNX sources are linted where the build kept
  them (``--keep-onnx``: ``onnx/NAME.onnx``) against the operator table of the manifest's TensorRT release
  (every table where none matches, as the build does) and that flavour's real parser, where installed.

Dimensions the manifest declares dynamic (a name in a component's I/O shape) are not warned of.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mmg_runtime.errors import UserError
from mmg_runtime.manifest import MANIFEST_NAME, Component, Manifest, load_manifest
from mmg_runtime.tensorrt import FLAVOURS, LABELS

from . import supported_versions
from .rules import Finding, LintReport, count, lint_versions

GRAPHS = ("preprocess", "encoder", "pruner")
KEPT_ONNX = "onnx"
"""Folder of a TensorRT artifact directory that holds the engines' ONNX sources (``build --keep-onnx``)."""


def tensorrt_graphs(backend: str) -> tuple[str, ...]:
    """The graphs of a ``backend`` build that must pass the TensorRT lint: all three where engines are
    built from them; for ONNX Runtime the pruner alone (the one pruner graph of every backend), not its
    preprocess and encoder, which are ONNX Runtime's own flavours (uint8 Resize, opset-23 Attention)."""
    return GRAPHS if backend in FLAVOURS else ("pruner",)


def artifact_directory(path: Path) -> Manifest:
    """The manifest of the artifact directory ``path``; one UserError line where it has none."""
    if not (path / MANIFEST_NAME).is_file():
        raise UserError(f"{path}: a directory without {MANIFEST_NAME}; expected an ONNX file or an artifact "
                        f"directory written by mmg-export build")
    return load_manifest(path)


def operator_tables(manifest: Manifest) -> tuple[str, ...]:
    """The operator tables a TensorRT-bound graph of ``manifest`` is checked against: the one of its TensorRT
    release ("10.3.0.30" -> "10.3"), else every table we ship (TensorRT-RTX, a release without a table)."""
    release = manifest.versions.get("tensorrt", "") if manifest.backend == "tensorrt" else ""
    matching = [version for version in supported_versions() if release == version or release.startswith(f"{version}.")]
    return tuple(matching[-1:]) or supported_versions()


def lint_artifacts(directory: Path, trt_versions: Sequence[str] | None = None,
                   parsers: bool = True) -> tuple[Manifest, list[LintReport], list[str]]:
    """Check every graph of the artifact directory against the runtime it is built for.

    trt_versions: the operator tables for TensorRT-bound graphs (None: :func:`operator_tables`).
    parsers: also ask the real parser of a TensorRT directory's flavour, where installed.
    Returns (the manifest, one report per check, notes on components with nothing to lint).
    """
    manifest = artifact_directory(directory)
    tables = tuple(trt_versions or operator_tables(manifest))
    reports: list[LintReport] = []
    notes: list[str] = []
    for name, component in manifest.components.items():
        declared = {tensor: spec.shape for side in (component.inputs, component.outputs)
                    for tensor, spec in side.items()}
        if manifest.backend == "onnxruntime" and component.file.endswith(".onnx"):
            path = directory / component.file
            reports.append(onnxruntime_report(manifest, path, component))
        elif manifest.backend in FLAVOURS and (directory / KEPT_ONNX / f"{name}.onnx").is_file():
            path = directory / KEPT_ONNX / f"{name}.onnx"
        else:
            notes.append(_nothing_to_lint(manifest, component))
            continue
        if name in tensorrt_graphs(manifest.backend):
            reports += _tensorrt_reports(manifest, path, tables, declared, parsers)
    return manifest, reports, notes


def _tensorrt_reports(manifest: Manifest, path: Path, tables: Sequence[str], declared: dict,
                      parsers: bool) -> list[LintReport]:
    """The operator-table lint of ``path`` per table, with the verdict of the real parser of a TensorRT
    directory's flavour (ONNX Runtime directories: as the build, tables only)."""
    reports = lint_versions(path, tables, declared)
    if parsers and manifest.backend in FLAVOURS:
        from .parser import parser_verdict

        verdict = parser_verdict(path, manifest.backend)
        if verdict is None:
            reports[-1].parser = f"{LABELS[manifest.backend]} parser: not installed here"
        else:
            reports[-1].findings.extend(verdict.findings)
            reports[-1].parser = verdict.note
    return reports


def onnxruntime_report(manifest: Manifest, path: Path, component: Component) -> LintReport:
    """``path`` opened as ``run`` opens it (:class:`mmg_runtime.sessions.OrtSession` on the manifest's
    providers, I/O checked against ``component``'s): an error finding if ONNX Runtime refuses it. Providers
    this onnxruntime lacks (CUDA on a CPU machine) are left out, with a warning: the check is then only
    as good as the providers left."""
    import onnxruntime

    from mmg_runtime.component_io import check_component_io
    from mmg_runtime.sessions import OrtSession

    available = set(onnxruntime.get_available_providers())
    wanted = manifest.extra.get("providers") or [["CPUExecutionProvider", {}]]
    here = [pair for pair in wanted if pair[0] in available] or [["CPUExecutionProvider", {}]]
    findings = [Finding("warning", "onnxruntime-provider", "", "",
                        f"{name} is not in this onnxruntime (it has {', '.join(sorted(available))}): "
                        f"checked on {', '.join(pair[0] for pair in here)} only")
                for name, _ in wanted if name not in available]
    try:
        session = OrtSession(path, here)
        check_component_io(path, component, session.inputs, session.outputs)
    except UserError as error:
        findings.append(Finding("error", "onnxruntime", "", "", str(error)))
    source = f"ONNX Runtime {onnxruntime.__version__} on {', '.join(pair[0] for pair in here)}"
    return LintReport(findings, None, str(path), source, runtime="onnxruntime")


def _nothing_to_lint(manifest: Manifest, component: Component) -> str:
    """One line: why a component has no ONNX graph to lint here."""
    if component.file.endswith(".pt2"):
        return f"{component.file}: an AOTInductor package, not an ONNX graph: nothing to lint"
    label = LABELS.get(manifest.backend, manifest.backend)
    return (f"{component.file}: a {label} engine whose ONNX source was not kept (mmg-export build --keep-onnx "
            f"keeps it in {KEPT_ONNX}/): nothing to lint")


def summary(directory: Path, manifest: Manifest, reports: list[LintReport]) -> str:
    """One line: the directory, its backend and target, the checks and their counts."""
    errors = sum(len(report.errors) for report in reports)
    warnings = sum(len(report.warnings) for report in reports)
    graphs = len({report.model_path for report in reports})
    return (f"{directory}: {manifest.backend} artifacts for target {manifest.target}: {count(graphs, 'graph')}, "
            f"{count(len(reports), 'check')}, {count(errors, 'error')}, {count(warnings, 'warning')}")


def to_dict(directory: Path, manifest: Manifest, reports: list[LintReport], notes: list[str]) -> dict:
    """JSON-ready form of a directory's lint."""
    return {"directory": str(directory), "backend": manifest.backend, "target": manifest.target,
            "errors": sum(len(report.errors) for report in reports),
            "warnings": sum(len(report.warnings) for report in reports),
            "checks": [report.to_dict() for report in reports], "notes": notes}

