"""Faults on the output side: unwritable folders, a full disk, a file-size limit, SIGTERM and SIGKILL mid-write,
stale temporaries, and --test-data through symlinks. Each must end in exit 2 (130 for a signal) with one line
naming the file, the old output untouched and no temporary left, in bounded time and memory.

The suite runs as root, which ignores permission bits, so unwritable folders are made the ways root cannot
write either (an immutable folder, a read-only tmpfs), and the rest is injected in-process.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import converter
from converter import scratch
from converter.errors import BadOptions, OutputExists, WriteFailed
from tests.fixture_index import FIXTURES
from tests.measured_child import Measured, run_measured

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = FIXTURES / "keras3" / "tutorial.keras"
GRU = FIXTURES / "keras3" / "gru_states.keras"
COMMANDS = [("to-onnx", ".onnx"), ("to-npz", ".npz"), ("to-json", ".json")]
API = {".onnx": converter.to_onnx, ".npz": converter.to_npz, ".json": converter.to_json}
OLD = b"old output, must survive"
#: Wall-clock and memory bounds of every run here (generous for a shared 2-core machine).
SECONDS, MAX_RSS_MB = 10.0, 1024


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if scratch.is_temporary(p.name)]


class Run:
    """A finished child process: exit code, output and wall time (signal tests, which need its pid)."""

    def __init__(self, code: int, stdout: str, stderr: str, seconds: float) -> None:
        self.code, self.stdout, self.stderr, self.seconds = code, stdout, stderr, seconds

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def start(args: list[str], script: Path) -> subprocess.Popen:
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": env()}
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], **pipes)


def finish(proc: subprocess.Popen, started: float, timeout: float = 60) -> Run:
    """Wait for a child started by ``start`` (killed after ``timeout``)."""
    try:
        stdout, stderr = proc.communicate(timeout=max(0.0, started + timeout - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    return Run(proc.returncode, stdout, stderr, time.monotonic() - started)


def run_cli(args: list[object], preexec: Callable[[], None] | None = None) -> Measured:
    """The CLI in a child, with its own wall time and peak RSS."""
    return run_measured([sys.executable, "-m", "converter", *map(str, args)], env=env(), preexec=preexec)


def assert_clean_failure(run: Measured, target: Path, *words: str) -> None:
    assert run.code == 2, run.stderr
    assert len(run.error_lines) == 1 and "Traceback" not in run.stderr, run.stderr
    line = run.error_lines[0]
    assert line.startswith("error: ") and str(target) in line, line
    for word in words:
        assert word in line, line
    assert run.seconds < SECONDS and run.rss_mb < MAX_RSS_MB, (run.seconds, run.rss_mb)
    assert target.read_bytes() == OLD
    assert not temporaries(target.parent)


# --- unwritable folders, a full disk, a file-size limit (real, in a child process) -----------------------------


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount small tmpfs folders under tmp_path (skipped where mounting is not allowed)."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        folder = tmp_path / f"mnt{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> None:
    """Use up every byte of a small tmpfs (the old output is already in it)."""
    with (folder / "filler").open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC


@pytest.mark.parametrize("command,suffix", COMMANDS)
def test_full_disk_is_one_line_exit_2(tmpfs, command: str, suffix: str) -> None:
    folder = tmpfs("size=64k")
    target = folder / f"m{suffix}"
    target.write_bytes(OLD)
    fill(folder)
    run = run_cli([command, TUTORIAL, "-o", target, "--force", "--oracle", "numpy"])
    assert_clean_failure(run, target, "No space left on device", "disk is full", "untouched")


def test_predict_on_a_full_disk(tmpfs, tmp_path: Path) -> None:
    import numpy as np

    inputs = tmp_path / "in.npy"
    np.save(inputs, np.ones((2, 4, 3), np.float32))
    folder = tmpfs("size=64k")
    target = folder / "out.npz"
    target.write_bytes(OLD)
    fill(folder)
    run = run_cli(["predict", TUTORIAL, "--inputs", inputs, "-o", target, "--force"])
    assert_clean_failure(run, target, "No space left on device")


def test_read_only_file_system(tmpfs) -> None:
    folder = tmpfs("size=64k")
    target = folder / "m.onnx"
    target.write_bytes(OLD)
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    run = run_cli(["to-onnx", TUTORIAL, "-o", target, "--force", "--oracle", "numpy"])
    assert_clean_failure(run, target, "Read-only file system", "choose another -o folder")


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Path]:
    """A folder in which no file can be created, even by root: chattr +i (or mode 555 for other users)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "m.npz").write_bytes(OLD)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available on this file system")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_unwritable_folder(unwritable: Path) -> None:
    target = unwritable / "m.npz"
    run = run_cli(["to-npz", TUTORIAL, "-o", target, "--force", "--oracle", "numpy"])
    assert_clean_failure(run, target, "not writable")


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # as a shell leaves it: only our own handling saves us

    return apply


@pytest.mark.parametrize("command,suffix", COMMANDS)
def test_file_size_limit(tmp_path: Path, command: str, suffix: str) -> None:
    target = tmp_path / f"m{suffix}"
    target.write_bytes(OLD)
    run = run_cli([command, TUTORIAL, "-o", target, "--force", "--oracle", "numpy"], _file_size_limit(1000))
    assert_clean_failure(run, target, "File too large", "ulimit -f")


# --- the same faults injected in-process, through the Python API ------------------------------------------------

FAULTS = [errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EROFS, errno.EIO]


@pytest.mark.parametrize("code", FAULTS, ids=errno.errorcode.get)
@pytest.mark.parametrize("suffix", list(API))
def test_api_fault_making_the_temporary(tmp_path: Path, monkeypatch, code: int, suffix: str) -> None:
    target = tmp_path / f"m{suffix}"
    target.write_bytes(OLD)

    def refuse(*args: object, **kwargs: object) -> str:
        raise OSError(code, os.strerror(code), str(tmp_path / ".lstm-convert-1-x"))

    monkeypatch.setattr(scratch.tempfile, "mkdtemp", refuse)
    with pytest.raises(WriteFailed) as info:
        API[suffix](TUTORIAL, target, force=True, oracle="numpy")
    message = str(info.value)
    assert message.startswith(f"{target}: cannot write it ({os.strerror(code)})") and "\n" not in message
    assert target.read_bytes() == OLD and not temporaries(tmp_path)


@pytest.mark.parametrize("code", FAULTS, ids=errno.errorcode.get)
@pytest.mark.parametrize("suffix", list(API))
def test_api_fault_half_way_through_the_write(tmp_path: Path, monkeypatch, code: int, suffix: str) -> None:
    """The disk fills after part of the file is written: the partial temporary goes, the old file stays."""
    import converter.export.json_doc
    import converter.export.npz
    import converter.export.onnx_file

    target = tmp_path / f"m{suffix}"
    target.write_bytes(OLD)
    partial: list[Path] = []

    def half_written(model: object, file: object, **kwargs: object) -> None:
        if isinstance(file, Path):
            file.write_bytes(b"x" * 5000)
            partial.append(file)
        else:
            file.write(b"x" * 5000)  # type: ignore[attr-defined]
            file.flush()  # type: ignore[attr-defined]
            partial.append(Path(file.name))  # type: ignore[attr-defined]
        assert partial[-1].stat().st_size == 5000
        raise OSError(code, os.strerror(code))

    module, name = {
        ".onnx": (converter.export.onnx_file, "write_onnx"),
        ".npz": (converter.export.npz, "write_npz"),
        ".json": (converter.export.json_doc, "write_json"),
    }[suffix]
    monkeypatch.setattr(module, name, half_written)
    with pytest.raises(WriteFailed, match=os.strerror(code)) as info:
        API[suffix](TUTORIAL, target, force=True, oracle="numpy")
    assert str(info.value).startswith(f"{target}: ") and "\n" not in str(info.value)
    assert partial and not partial[0].exists()
    assert target.read_bytes() == OLD and not temporaries(tmp_path)


def test_api_fault_writing_the_report(tmp_path: Path, monkeypatch) -> None:
    target, report = tmp_path / "m.onnx", tmp_path / "r.json"
    report.write_bytes(OLD)
    real = Path.write_text

    def full(self: Path, *args: object, **kwargs: object) -> int:
        if self.name == "r.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(WriteFailed, match=f"^{report}: cannot write it"):
        converter.to_onnx(TUTORIAL, target, report=report, oracle="numpy")
    assert report.read_bytes() == OLD and not temporaries(tmp_path)


# --- SIGTERM and SIGKILL mid-write, stale temporaries --------------------------------------------------------------

#: A child that runs the CLI but stops just before comparing outputs: the export in its temporary folder is then
#: complete and unverified, the worst moment to be killed. It touches READY_DIR/<pid> when it gets there.
SLOW_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path

    import converter.convert
    import converter.export.onnx_verify

    def slow_compare(*args, **kwargs):
        Path(os.environ["READY_DIR"], str(os.getpid())).touch()
        time.sleep(60)

    converter.convert.compare = slow_compare  # re-run in --jobs workers too: spawn re-imports this script
    converter.export.onnx_verify.compare = slow_compare  # ONNX exports are compared there (several calls)

    if __name__ == "__main__":
        sys.argv = ["lstm-convert", *sys.argv[1:]]
        from converter.cli import main

        main()
    """
)


@pytest.fixture
def slow_child(tmp_path: Path, monkeypatch) -> Callable[..., tuple[subprocess.Popen, float]]:
    script = tmp_path / "slow_child.py"
    script.write_text(SLOW_CHILD)
    ready = tmp_path / "ready"
    ready.mkdir()
    monkeypatch.setenv("READY_DIR", str(ready))

    def launch(*args: object, waiting_for: int = 1) -> tuple[subprocess.Popen, float]:
        started = time.monotonic()
        proc = start([str(a) for a in args], script=script)
        while len(list(ready.iterdir())) < waiting_for:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - started < 60, "the child never reached the write"
            time.sleep(0.05)
        for marker in ready.iterdir():
            marker.unlink()
        return proc, started

    return launch


@pytest.mark.parametrize("suffix", [".onnx", ".npz"])
def test_sigterm_mid_write_is_like_ctrl_c(tmp_path: Path, slow_child, suffix: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = out / f"m{suffix}"
    target.write_bytes(OLD)
    proc, _ = slow_child(f"to-{suffix[1:]}", TUTORIAL, "-o", target, "--force", "--oracle", "numpy")
    (temp,) = temporaries(out)
    assert temp.name.startswith(f".lstm-convert-{proc.pid}-") and (temp / target.name).stat().st_size > 0
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    run = finish(proc, sent)
    assert run.code == 130 and run.seconds < SECONDS, run.stderr
    assert run.error_lines == [
        "terminated (SIGTERM): the output in progress was not written (outputs already finished stay)."
    ]
    assert target.read_bytes() == OLD and not temporaries(out)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_every_worker_of_a_batch(tmp_path: Path, slow_child, signum: int) -> None:
    """Sent to the parent alone (as kill does): the workers are stopped too, not left to finish their files."""
    out = tmp_path / "out"
    out.mkdir()
    proc, _ = slow_child("to-npz", TUTORIAL, GRU, "-o", out, "--jobs", "2", "--oracle", "numpy", waiting_for=2)
    assert len(temporaries(out)) == 2
    sent = time.monotonic()
    proc.send_signal(signum)
    run = finish(proc, sent)
    assert run.code == 130 and run.seconds < SECONDS, run.stderr
    assert "Traceback" not in run.stderr
    assert list(out.iterdir()) == []  # neither export was put in place, no temporary is left


def test_sigkill_leftovers_are_never_exports_and_are_swept(tmp_path: Path, slow_child) -> None:
    out = tmp_path / "out"
    out.mkdir()
    good = out / "good.npz"
    converter.to_npz(GRU, good, oracle="numpy")
    proc, _ = slow_child("to-npz", TUTORIAL, "-o", out / "m.npz", "--oracle", "numpy")
    proc.kill()
    proc.wait()
    (stale,) = temporaries(out)
    assert (stale / "m.npz").stat().st_size > 0  # a complete, unverified export inside it
    # verify FOLDER checks the real export only, never the one in the temporary folder
    run = run_cli(["verify", out, "--json"])
    assert run.code == 0, run.stderr
    docs = [json.loads(line) for line in run.stdout.splitlines()]
    assert [(doc["export"], doc["passed"]) for doc in docs] == [(str(good), True)]
    # the next run writing into that folder removes the dead run's temporary
    converter.to_npz(TUTORIAL, out / "m.npz", oracle="numpy")
    assert not temporaries(out) and (out / "m.npz").exists()


def test_a_live_runs_temporary_is_never_swept(tmp_path: Path, slow_child) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc, _ = slow_child("to-npz", TUTORIAL, "-o", out / "slow.npz", "--oracle", "numpy")
    try:
        (live,) = temporaries(out)
        converter.to_npz(GRU, out / "other.npz", oracle="numpy")  # sweeps the folder while the other run writes
        assert live.is_dir() and (live / "slow.npz").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        run = finish(proc, time.monotonic())
    assert run.code == 130 and not temporaries(out) and not (out / "slow.npz").exists()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_sweep_needs_a_dead_pid_and_a_free_lock(tmp_path: Path) -> None:
    import fcntl

    dead = _dead_pid()
    no_lock = tmp_path / f".lstm-convert-{dead}-nolock"  # killed before it took its lock
    no_lock.mkdir()
    (no_lock / "m.onnx").write_bytes(b"partial")
    free_lock = tmp_path / f".lstm-convert-{dead}-free"
    free_lock.mkdir()
    (free_lock / scratch.LOCK_NAME).touch()
    held = tmp_path / f".lstm-convert-{dead}-held"  # pid unknown here, lock held: a live run in another namespace
    held.mkdir()
    fd = os.open(held / scratch.LOCK_NAME, os.O_CREAT | os.O_WRONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    alive = tmp_path / f".lstm-convert-{os.getppid()}-alive"  # a live pid, lock free: the moment before locking
    alive.mkdir()
    old = tmp_path / ".lstm-convert-abc123"  # an older lstm-convert's: no owner recorded, left alone
    old.mkdir()
    try:
        removed = scratch.sweep(tmp_path)
    finally:
        os.close(fd)
    assert sorted(removed) == sorted([no_lock, free_lock])
    assert held.is_dir() and alive.is_dir() and old.is_dir()


def test_folder_scans_skip_temporaries_of_older_versions(tmp_path: Path) -> None:
    old = tmp_path / ".lstm-convert-abc123"
    old.mkdir()
    converter.to_json(TUTORIAL, old / "m.json", oracle="numpy")
    run = run_cli(["verify", tmp_path])
    assert run.code == 2 and "no model files found" in run.stderr


# --- --test-data through symlinks -----------------------------------------------------------------------------------


def test_test_data_into_a_symlinked_empty_folder(tmp_path: Path) -> None:
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.symlink_to(real)
    run = run_cli(["to-onnx", TUTORIAL, "-o", tmp_path / "m.onnx", "--oracle", "numpy", "--test-data", link])
    assert run.code == 0, run.stderr
    assert link.is_symlink() and link.resolve() == real
    assert (real / "model.onnx").exists() and sorted(p.name for p in (real / "test_data_set_0").iterdir()) == [
        "input_0.pb",
        "output_0.pb",
    ]
    assert not temporaries(tmp_path)


def test_test_data_symlink_refusals(tmp_path: Path) -> None:
    full, link, dangling = tmp_path / "full", tmp_path / "link", tmp_path / "dangling"
    full.mkdir()
    (full / "keep.txt").write_bytes(OLD)
    link.symlink_to(full)
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputExists, match=f"^{link}: exists and is not an empty folder"):
        converter.to_onnx(TUTORIAL, tmp_path / "m.onnx", oracle="numpy", test_data=link)
    with pytest.raises(BadOptions, match=f"^{dangling}: is a symlink to .*nowhere, which leads to no folder"):
        converter.to_onnx(TUTORIAL, tmp_path / "m.onnx", oracle="numpy", test_data=dangling)
    run = run_cli(["to-onnx", TUTORIAL, "-o", tmp_path / "m.onnx", "--oracle", "numpy", "--test-data", dangling])
    assert run.code == 2 and len(run.error_lines) == 1 and str(dangling) in run.stderr
    assert (full / "keep.txt").read_bytes() == OLD and not (tmp_path / "m.onnx").exists()
    assert not temporaries(tmp_path)
