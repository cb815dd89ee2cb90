"""lmrec's one clock (lmrec.clock), and the time-dependent tests on a machine that has just started: they are run
again in a Linux time namespace whose monotonic clock starts near 0 (``unshare --time``, util-linux)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lmrec import clock
from lmrec.clock import ManualClock

ROOT = Path(__file__).resolve().parents[1]
# every test whose outcome depends on elapsed time: session expiry, the training time budget, this module
TIME_TESTS = ["tests/serve/test_app.py", "tests/train/test_trainer.py", "tests/test_run.py", "tests/test_clock.py"]
TIME_SELECTION = "(session or store or budget or lost_after or clock) and not just_started"


def test_use_swaps_the_clock_for_every_thread_and_restores_it():
    manual = ManualClock(start=3.0)
    seen = []
    with clock.use(manual):
        manual.advance(2)
        worker = threading.Thread(target=lambda: seen.append(clock.now()))
        worker.start()
        worker.join()
        assert clock.now() == 5.0
    assert seen == [5.0] and clock.now() == pytest.approx(time.monotonic(), abs=60)
    with pytest.raises(ValueError, match="does not go back"):
        manual.advance(-1)


def test_the_default_clock_is_read_when_asked_not_when_defined():
    first = clock.now()
    assert clock.now() >= first >= 0


def host_monotonic() -> float:
    """The machine's monotonic clock: this process's, less the offset of the time namespace it may already be in
    (a new namespace's offset is relative to the machine's clock, not to its parent's)."""
    offsets = Path("/proc/self/timens_offsets")
    lines = offsets.read_text(encoding="utf-8").splitlines() if offsets.exists() else []
    seconds, nanoseconds = next(([int(x) for x in line.split()[1:3]] for line in lines if line.startswith("monotonic")),
                                [0, 0])
    return time.monotonic() - seconds - nanoseconds / 1e9


def test_time_tests_pass_on_a_machine_just_started(tmp_path):
    """The time-dependent tests again, in a time namespace whose monotonic clock starts at about 1 s."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) not found: cannot start a time namespace")
    shift = f"--monotonic=-{max(int(host_monotonic()) - 1, 0)}"
    probe = subprocess.run([unshare, "--time", shift, "--fork", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"a time namespace is not permitted here ({probe.stderr.strip() or probe.returncode}): "
                    "`unshare --time` needs CAP_SYS_ADMIN and Linux 5.6+")
    script = ("import sys, time, pytest; print(f'monotonic {time.monotonic():.1f}', flush=True); "
              "sys.exit(pytest.main(sys.argv[1:]))")
    command = [unshare, "--time", shift, "--fork", sys.executable, "-c", script, "-q", "-p", "no:cacheprovider",
               "--basetemp", str(tmp_path / "basetemp"), *TIME_TESTS, "-k", TIME_SELECTION]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert lines[0].startswith("monotonic ") and float(lines[0].split()[1]) < 300, lines[0]  # the namespace's clock
    assert " passed" in lines[-1] and " skipped" not in lines[-1], lines[-1]
