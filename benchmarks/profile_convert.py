"""Where the time and the memory of one ``lstm-convert to-onnx`` go, by converter function.

Run: ``python benchmarks/profile_convert.py --units 8192 [--flags "--no-verify --oracle numpy"]`` (writes the
model with ``big_lstm.write_model`` into a temp folder), or ``python benchmarks/profile_convert.py --model M.keras``.

The command runs in this process. A thread samples every few milliseconds the resident set size and the
stack of the main thread, and charges each sample to the innermost function of the ``converter`` package
on the stack (the caller in converter, when the time is spent inside NumPy, h5py or onnx). It reports per
function: share of wall time, the highest RSS seen while it ran, and the RSS it added (sum of increases).
With ``--pyinstrument`` the run is also profiled by pyinstrument (``pip install pyinstrument``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from common import table

PAGE = os.sysconf("SC_PAGE_SIZE")
PACKAGE = os.sep + "converter" + os.sep


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


@dataclass
class Sampler:
    """Samples (seconds, RSS, innermost converter function) of the main thread."""

    interval: float = 0.005
    samples: list[tuple[float, int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def where(self, main: int) -> str:
        frame = sys._current_frames().get(main)
        while frame is not None:
            code = frame.f_code
            if PACKAGE in code.co_filename:
                return f"{Path(code.co_filename).stem}.{code.co_name}"
            frame = frame.f_back
        return "(outside converter: imports, CLI)"

    def run(self, main: int) -> None:
        start = time.perf_counter()
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - start, rss(), self.where(main)))
            time.sleep(self.interval)

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self.run, args=(threading.get_ident(),), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def attribute(samples: list[tuple[float, int, str]]) -> list[dict]:
    seconds: dict[str, float] = defaultdict(float)
    added: dict[str, int] = defaultdict(int)
    highest: dict[str, int] = defaultdict(int)
    for (t0, r0, _), (t1, r1, where) in itertools.pairwise(samples):
        seconds[where] += t1 - t0
        added[where] += max(0, r1 - r0)
        highest[where] = max(highest[where], r1)
    total = sum(seconds.values()) or 1.0
    rows = [
        {"function": w, "seconds": s, "share": s / total, "rss_added": added[w], "highest_rss": highest[w]}
        for w, s in seconds.items()
    ]
    return sorted(rows, key=lambda r: -r["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=8192, help="Write LSTM(units) with big_lstm.write_model.")
    parser.add_argument("--model", type=Path, default=None, help="Profile this model file instead.")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--flags", default="--no-verify --oracle numpy", help="Extra to-onnx flags, one string.")
    parser.add_argument("--pyinstrument", action="store_true", help="Also profile with pyinstrument.")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="lstm-convert-profile-"))
    model, config = args.model, args.config
    weight_bytes = 0
    if model is None:
        from big_lstm import write_model

        model, config = write_model(folder, args.units, args.units, 4)
        weight_bytes = 4 * (2 * args.units * 4 * args.units + 5 * args.units + 1)
    argv = ["to-onnx", str(model), "-o", str(folder / "out.onnx"), "--force", *shlex.split(args.flags)]
    argv += ["--config", str(config)] if config else []

    baseline = rss()
    from converter.cli import app

    profiler = None
    if args.pyinstrument:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.002)
        profiler.start()
    started = time.perf_counter()
    with Sampler() as sampler:
        try:
            app(argv, prog_name="lstm-convert", standalone_mode=False)
        finally:
            seconds = time.perf_counter() - started
    if profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False, show_all=False))
    peak = max(r for _, r, _ in sampler.samples)
    at_peak = next(w for _, r, w in sampler.samples if r == peak)
    rows = attribute(sampler.samples)
    print(f"\nlstm-convert {' '.join(argv)}\n{seconds:.2f} s, peak RSS {peak / 2**20:.0f} MB (at start "
          f"{baseline / 2**20:.0f} MB), reached in {at_peak}")  # fmt: skip
    if weight_bytes:
        print(f"weights {weight_bytes / 2**20:.0f} MB: peak RSS / weights = {peak / weight_bytes:.2f}")
    print(table(["function", "seconds", "share", "RSS added MB", "highest RSS MB"], [
        [r["function"], f"{r['seconds']:.2f}", f"{r['share']:.0%}", f"{r['rss_added'] / 2**20:.0f}",
         f"{r['highest_rss'] / 2**20:.0f}"] for r in rows[:20]]))  # fmt: skip
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()
