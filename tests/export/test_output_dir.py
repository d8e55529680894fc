"""Build output directories (mmg_export.builder.output_dir): what --overwrite may replace, the lock,
changes made during a build, stale temporary directories, signals and a full disk."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mmg_export.builder.output_dir import _signals_deferred, atomic_output_dir
from mmg_export.cli import main
from mmg_runtime.errors import UserError
from mmg_runtime.manifest import write_manifest
from samples import make_manifest


def artifact_dir(path: Path) -> Path:
    """A small directory with a valid manifest listing its files (one of ours)."""
    path.mkdir(parents=True)
    write_manifest(path, make_manifest(path, backend="onnxruntime"))
    return path


def siblings(path: Path) -> list[str]:
    return sorted(entry.name for entry in path.parent.iterdir())


def test_success_leaves_only_the_directory(tmp_path: Path) -> None:
    final = tmp_path / "out" / "orin-agx"
    with atomic_output_dir(final) as work:
        assert work.parent == final.parent and work.name.startswith(".orin-agx.tmp-")
        assert sorted(siblings(work)) == [".orin-agx.lock", work.name]
        (work / "manifest.json").write_text("{}")
    assert (final / "manifest.json").read_text() == "{}"
    assert siblings(final) == ["orin-agx"]


def test_an_exception_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "artifacts"
    for error in (RuntimeError("build failed"), KeyboardInterrupt(), SystemExit(143)):
        with pytest.raises(type(error)):
            with atomic_output_dir(final) as work:
                (work / "half.engine").write_bytes(b"partial")
                raise error
        assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_one_of_our_directories(tmp_path: Path) -> None:
    final = artifact_dir(tmp_path / "artifacts")
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        with atomic_output_dir(final):
            pytest.fail("must not get here")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_dir(final, overwrite=True) as work:
            (work / "new.engine").write_bytes(b"new")
            raise KeyboardInterrupt
    assert (final / "manifest.json").is_file() and not (final / "new.engine").exists()
    with atomic_output_dir(final, overwrite=True) as work:
        (work / "new.engine").write_bytes(b"new")
    assert [p.name for p in final.iterdir()] == ["new.engine"]
    assert siblings(final) == ["artifacts"]


@pytest.mark.parametrize("make,reason", [
    (lambda path: (path.mkdir(), (path / "thesis.tex").write_text("years of work")), "is not an artifact directory "
     "of this version (" + "{path}/manifest.json: missing"),
    (lambda path: path.write_text("a file"), "is not a directory"),
    (lambda path: path.symlink_to(artifact_dir(path.parent / "real"), target_is_directory=True), "is a symbolic link"),
    (lambda path: (artifact_dir(path), (path / "notes.txt").write_text("mine")), "holds notes.txt, which its manifest "
     "does not list"),
    (lambda path: (artifact_dir(path), (path / "manifest.json").write_text('{"schema_version": 1}')),
     "is not an artifact directory of this version ({path}/manifest.json: schema_version 1 is not supported"),
])
def test_overwrite_refuses_anything_else(tmp_path: Path, make, reason) -> None:
    final = tmp_path / "out"
    make(final)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(UserError) as error:
        with atomic_output_dir(final, overwrite=True):
            pytest.fail("checked before the build starts")
    assert str(error.value).startswith(f"{final}: {reason.format(path=final)}")
    assert str(error.value).endswith("; --overwrite replaces only an artifact directory written by mmg-export build "
                                     "(remove it yourself or choose another --out)")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("out", [".", "..", "./", "sub/.."])
def test_the_working_directory_is_never_an_output(tmp_path: Path, monkeypatch, out) -> None:
    """Even when it is an artifact directory: replacing it would pull the directory from under the user."""
    monkeypatch.chdir(artifact_dir(tmp_path / "artifacts"))
    (tmp_path / "artifacts" / "sub").mkdir()
    with pytest.raises(UserError, match=rf"^--out {out}: is the working directory or contains it"):
        with atomic_output_dir(out, overwrite=True):
            pytest.fail("refused before anything is written")


def test_a_second_build_to_the_same_out_is_refused(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with atomic_output_dir(final) as first:
        (first / "a").write_text("first")
        with pytest.raises(UserError, match=rf"^{final}: another build is writing it \(it holds "
                                            rf"{tmp_path / '.out.lock'}\)"):
            with atomic_output_dir(final, overwrite=True):
                pytest.fail("refused")
        assert (first / "a").read_text() == "first"  # not taken for stale
    assert (final / "a").read_text() == "first"
    with atomic_output_dir(tmp_path / "other"):  # another --out in the same folder is not blocked
        pass


@pytest.mark.parametrize("content", [[], ["user.txt"]])
def test_a_directory_made_at_out_during_the_build_is_left_alone(tmp_path: Path, content) -> None:
    final = tmp_path / "out"
    with pytest.raises(UserError, match=rf"^{final}: appeared during the build \(not made by it\); left as it is"):
        with atomic_output_dir(final) as work:
            (work / "manifest.json").write_text("{}")
            final.mkdir()
            for name in content:
                (final / name).write_text("made meanwhile")
    assert sorted(p.name for p in final.iterdir()) == content
    assert siblings(final) == ["out"]


def test_a_checked_directory_replaced_or_changed_during_the_build_is_left_alone(tmp_path: Path) -> None:
    final = artifact_dir(tmp_path / "out")
    with pytest.raises(UserError, match=rf"^{final}: replaced or changed during the build; left as it is"):
        with atomic_output_dir(final, overwrite=True) as work:
            (work / "new.engine").write_bytes(b"new")
            shutil.rmtree(final)
            artifact_dir(final)  # looks like ours, but is not the directory that was checked
            (final / "made-meanwhile").touch()
    (final / "made-meanwhile").unlink()
    with pytest.raises(UserError, match="replaced or changed during the build"):
        with atomic_output_dir(final, overwrite=True):
            (final / "notes.txt").write_text("a user file added to the checked directory")
    assert (final / "notes.txt").exists() and siblings(final) == ["out"]


def test_stale_temporary_directories_of_killed_builds_are_removed(tmp_path: Path) -> None:
    stale = [tmp_path / ".out.tmp-0123abcd", tmp_path / ".out.tmp-x_9kq2ze"]  # token_hex(4), tempfile
    for path in stale:
        (path / "model").mkdir(parents=True)
        (path / "model" / "weights").write_bytes(b"half written")
    kept = [tmp_path / ".out.tmp-not-ours", tmp_path / ".other.tmp-0123abcd", tmp_path / ".out.tmp-0123abcd0"]
    for path in kept:
        path.mkdir()
    (tmp_path / ".out.tmp-89abcdef").write_text("a file, not our directory")
    with atomic_output_dir(tmp_path / "out"):
        assert not any(path.exists() for path in stale)
    assert siblings(tmp_path / "out") == sorted([".out.tmp-0123abcd0", ".out.tmp-89abcdef", ".out.tmp-not-ours",
                                                  ".other.tmp-0123abcd", "out"])


def test_signals_wait_for_the_swap() -> None:
    """SIGINT during a deferred block is delivered when the block ends, to the handler in place."""
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with _signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            reached.append("end of the block")
        reached.append("after the block")
    assert reached == ["end of the block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


SIGNALLED_BUILD = textwrap.dedent("""
    import signal, sys, time
    from mmg_export.builder.output_dir import atomic_output_dir
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # as the CLI turns SIGTERM into an exception
    with atomic_output_dir(sys.argv[1]) as work:
        (work / "encoder.onnx").write_bytes(b"x" * 1000)
        print("writing", flush=True)
        time.sleep(60)
""")


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_build_leaves_nothing(tmp_path: Path, number) -> None:
    process = subprocess.Popen([sys.executable, "-c", SIGNALLED_BUILD, str(tmp_path / "out")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "writing\n"
    process.send_signal(number)
    process.wait(timeout=30)
    assert process.returncode != 0
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with pytest.raises(UserError) as error:
        with atomic_output_dir(final) as work:
            (work / "manifest.json").write_text("{}")
            with open("/dev/full", "wb") as full:  # the kernel's always-full device: ENOSPC on write
                full.write(b"x" * 4096)
                full.flush()
    message = str(error.value)
    assert message.startswith(f"{final}: no space left on the device (") and "\n" not in message
    assert "after writing 0.0 MiB; the error was: [Errno 28] No space left on device" in message
    assert list(tmp_path.iterdir()) == []


def test_build_overwrite_refuses_user_files_and_the_working_directory(tmp_path: Path, monkeypatch, capsys) -> None:
    """Issue 12: `build --overwrite` deleted a directory of user files, a plain file, and tried `--out .`."""
    user_dir, plain = tmp_path / "thesis", tmp_path / "notes.txt"
    user_dir.mkdir()
    (user_dir / "chapter1.tex").write_text("years of work")
    plain.write_text("a plain file")
    for out in (user_dir, plain):
        assert main(["build", "--target", "cpu", "--out", str(out), "--overwrite"]) == 1
        assert "--overwrite replaces only an artifact directory written by mmg-export build" in capsys.readouterr().err
    assert (user_dir / "chapter1.tex").read_text() == "years of work" and plain.read_text() == "a plain file"
    monkeypatch.chdir(user_dir)
    assert main(["build", "--target", "cpu", "--out", ".", "--overwrite"]) == 1
    assert "--out .: is the working directory or contains it" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["chapter1.tex", "notes.txt", "thesis"]


INTERRUPTED_BUILD = textwrap.dedent("""
    import sys
    from mmg_export.cli import main
    sys.exit(main(["build", "--target", "cpu", "--out", sys.argv[1]]))
""")


@pytest.mark.slow
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_build_leaves_nothing(tmp_path: Path, number) -> None:
    """A signal while the real build writes (its temporary directory holds a graph): exit 130, one
    line, nothing left beside --out (no temporary directory, no lock)."""
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-c", INTERRUPTED_BUILD, str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.tmp-*/*.onnx")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(number)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1] == "mmg-export build: interrupted" and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_real_build_on_a_full_filesystem(tmp_path: Path) -> None:
    """A 1 MiB tmpfs fills up during the build: one line, nothing left. Where it fills depends on the
    graphs' sizes: in an ONNX write (ENOSPC on the exception), or while safetensors writes the model
    ("Error while serializing: I/O error", no errno: caught by the free space left). Needs a private
    mount namespace (unshare)."""
    mount = tmp_path / "small"
    mount.mkdir()
    script = (f"mount -t tmpfs -o size=1m tmpfs {mount} && cd {mount} && "
              f"{sys.executable} -m mmg_export.cli build --target cpu --out {mount}/out; echo rc=$?; ls -A {mount}")
    result = subprocess.run(["unshare", "--map-root-user", "--mount", "sh", "-c", script],
                            capture_output=True, text=True, timeout=300)
    if "rc=" not in result.stdout:
        pytest.skip(f"cannot mount a private tmpfs here: {result.stderr.strip()[:200]}")
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"mmg-export build: error: {mount}/out: no space left on the device ("), result.stderr
    assert ("[Errno 28] No space left on device" in last
            or ("MiB free after writing" in last and "Error while serializing: I/O error" in last)), last
    assert "Traceback" not in result.stderr
    assert result.stdout.split() == ["rc=1"]  # nothing listed: the filesystem is empty again
