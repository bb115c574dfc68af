"""Run each fuzz harness for a bounded time (STYLE.md section 8).

``LNS_FUZZ_SECONDS`` sets the budget per harness (default 10; two harnesses). libFuzzer exits 0 when
``-max_total_time`` runs out without a failure, and non-zero on the first input that
breaks the harness's invariant, leaving the input in the test's temporary directory.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
HARNESSES = sorted(HERE.glob("fuzz_*.py"))

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris is not installed (pip install atheris; Linux and CPython only)",
)


def test_there_is_a_harness() -> None:
    assert HARNESSES


def test_seed_corpus_is_present() -> None:
    corpus = HERE / "corpus_l2tp"
    assert sorted(path.name for path in corpus.iterdir())


@pytest.mark.integration  # the fuzzer runs as a child process for LNS_FUZZ_SECONDS
@pytest.mark.parametrize("harness", HARNESSES, ids=lambda path: path.stem)
def test_harness_runs_clean(harness: Path, tmp_path: Path) -> None:
    seconds = int(os.environ.get("LNS_FUZZ_SECONDS", "10"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # The wall-clock bound leaves room for start-up; the run itself stops at max_total_time.
    result = subprocess.run(
        [
            sys.executable,
            str(harness),
            f"-max_total_time={seconds}",
            f"-artifact_prefix={tmp_path}/",
            "-timeout=10",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
    )
    assert result.returncode == 0, f"{harness.name} found a failing input:\n{result.stderr[-6000:]}"
