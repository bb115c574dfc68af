"""The README's Try-it demo, run as a newcomer runs it: it works, and its log is clean.

A clean log has no object reprs ("<... object at 0x7f...>") and no warning: in a
normal run nothing is wrong, so nothing may say otherwise (issue 16).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lns.testing.processes import SOURCE_ROOT, working_tree_env

pytestmark = pytest.mark.integration


def test_try_it_runs_and_its_log_holds_no_object_repr_and_no_warning(freeradius_binary: str):
    done = subprocess.run(
        [sys.executable, "scripts/try_it.py", "--sessions", "20", "--hold", "1", "--keep"],
        cwd=SOURCE_ROOT,
        env=working_tree_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    kept = re.search(r"^kept: (.+)$", done.stdout, re.MULTILINE)
    assert kept is not None, done.stdout + done.stderr
    directory = Path(kept.group(1))
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "result             OK" in done.stdout
        log = (directory / "lns.log").read_text()
        assert log.count("session up:") == 20
        assert " object at 0x" not in log
        warnings = [
            line for line in log.splitlines() if re.search(r"#(warn|error|critical)\]", line)
        ]
        assert warnings == []
        assert "Traceback" not in log
        assert re.search(r"lns \d+\.\d+\.\d+\S* up: node try-it", log)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
