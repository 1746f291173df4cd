"""The Basic-path benchmark runs and reports both figures (the figures themselves are not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_basic.py"


def test_bench_basic_smoke() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--iterations", "50", "--repeats", "2"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "(b) first request (store + argon2id)" in done.stdout
    assert "us of middleware time (target < 50 us)" in done.stdout
    assert "SQL statements during 100 repeated requests: 0" in done.stdout
    assert "refused on the first request after the revocation interval: yes" in done.stdout
