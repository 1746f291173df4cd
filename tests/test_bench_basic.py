"""The Basic-path benchmark runs and reports both figures (the figures themselves are not asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_basic.py"


def test_bench_basic_smoke(tmp_path: Path) -> None:
    # Its temporary store goes under tmp_path (TMPDIR), so a leftover folder would show here, never in /tmp.
    done = subprocess.run([sys.executable, str(SCRIPT), "--iterations", "50", "--repeats", "2"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "(b) first request (store + argon2id)" in done.stdout
    assert "us of middleware time (target < 50 us)" in done.stdout
    assert "SQL statements during 100 repeated requests: 0" in done.stdout
    assert "refused on the first request after the revocation interval: yes" in done.stdout
    assert list(tmp_path.iterdir()) == [], "the benchmark left its temporary store behind"
