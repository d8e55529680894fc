#!/usr/bin/env python3
"""Mutation testing (mutmut) of the code whose behaviour the tests must pin. Not run in CI.

    pip install -e '.[dev,mutation]'
    python scripts/mutation_test.py --scope prune            # mmg_export/prune/ (the default)
    python scripts/mutation_test.py --scope manifest prompt video

mutmut mutates one function at a time (flipped comparisons, changed constants, dropped calls ...)
and runs the tests that reach it; a mutant that no test fails on *survives*. The script stages a
copy of the packages (``src/*``) and ``tests/`` in ``--work``, writes mutmut's configuration there for
the chosen scopes and their tests (pytest's options: pyproject.toml's), runs it, and prints the score
(killed / all) and every survivor with its diff. Exit status 0 however many survive: the survivors
are for a person to read (kill with a test, or explain as equivalent).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCOPES = {
    # scope: (files to mutate, staged paths; tests that pin them, fast enough to run per mutant)
    "prune": (["mmg_export/prune/*"], ["tests/export/test_prune_handchecked.py", "tests/export/test_prune_reference.py",
                                        "tests/export/test_prune_baselines.py", "tests/export/test_prune_parity.py"]),
    "manifest": (["mmg_runtime/manifest.py", "mmg_runtime/trust.py"], ["tests/runtime/test_manifest.py",
                                                                        "tests/runtime/test_tensorrt_rtx_runtime.py"]),
    "prompt": (["mmg_runtime/prompt.py"], ["tests/runtime/test_prompt.py"]),
    "video": (["mmg_runtime/video.py"], ["tests/runtime/test_video.py"]),
}
# per mutant: the fast tier only (-m "not slow": no builds, which would rerun per mutant), and of the
# prune tests all but two shapes of the parity grid (the rest pins the same code); -k also matches
# module names, so the other scopes' fast tests all run
TEST_FILTER = ("not test_prune or (not real_clip and not llava_geometry and "
               "(5x9x4 or 8x20x16 or option or precision or not matches_reference))")
PACKAGES = sorted(path for path in (ROOT / "src").iterdir() if (path / "__init__.py").is_file())


def stage(work: Path, scopes: list[str]) -> None:
    """Copy the packages (src/*), the tests, pyproject.toml and mutmut's configuration to ``work``."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for package in PACKAGES:
        shutil.copytree(package, work / package.name, ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    only = [pattern for scope in scopes for pattern in SCOPES[scope][0]]
    tests = sorted({test for scope in scopes for test in SCOPES[scope][1]})
    settings = {"source_paths": [package.name for package in PACKAGES], "only_mutate": only,
                "pytest_add_cli_args_test_selection": tests,
                "pytest_add_cli_args": ["-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", "-k", TEST_FILTER]}
    (work / "setup.cfg").write_text("[mutmut]\ntimeout_multiplier = 2.0\ntimeout_constant = 30.0\n" + "".join(
        f"{key} =\n" + "".join(f"    {value}\n" for value in values) for key, values in settings.items()))
    # pytest's options (import mode, the helpers' path, markers) as the project sets them
    shutil.copy2(ROOT / "pyproject.toml", work / "pyproject.toml")


def mutmut(work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=work, text=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scope", nargs="+", choices=sorted(SCOPES), default=["prune"])
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "mutation")
    parser.add_argument("--max-children", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("mutmut") is None and subprocess.run([sys.executable, "-c", "import mutmut"]).returncode:
        raise SystemExit("mutmut is not installed: pip install -e '.[mutation]'")
    stage(args.work, args.scope)
    # one intra-op thread: mutmut forks a child per mutant, and a forked torch thread pool deadlocks
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)],
                         cwd=args.work, text=True, env=env)
    if run.returncode:
        raise SystemExit(f"mutmut run failed (exit {run.returncode}); see above")
    results = mutmut(args.work, "results", "--all", "true").stdout
    statuses = re.findall(r"^\s*(\S+): (\w[\w ]*)$", results, flags=re.MULTILINE)
    survivors = [name for name, status in statuses if status == "survived"]
    killed = sum(status == "killed" for _, status in statuses)
    print(f"\nmutants: {len(statuses)}, killed: {killed}, survived: {len(survivors)}, other (timeout, "
          f"no tests, suspicious): {len(statuses) - killed - len(survivors)}; "
          f"score {killed / max(len(statuses), 1):.1%}")
    for name in survivors:
        print(f"\n--- {name}\n{mutmut(args.work, 'show', name).stdout}")


if __name__ == "__main__":
    main()
