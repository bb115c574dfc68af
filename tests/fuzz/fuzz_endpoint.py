# Invariant: for any sequence of steps (protocol messages, mangled and random datagrams
# from four sources, time passing, calls and tunnels cleared from above), the whole
# LnsEndpoint never raises, keeps its state within its caps, sends an unlisted source
# no more bytes than it sent, and frees every tunnel by its timers once the peers fall
# silent (lns.testing.endpoint_driver states and checks it).
"""Atheris harness for the whole L2TP endpoint (issue 12), not only its decoders.

    python -m tests.fuzz.fuzz_endpoint -max_total_time=600    # libFuzzer flags pass through

(from the repository's root, so ``lns`` is this checkout's). The same driver runs
under hypothesis in tests/fuzz/test_endpoint_properties.py.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from lns.testing.endpoint_driver import ACTIONS, SOURCES, EndpointDriver

MAX_STEPS = 60
MAX_BLOB = 48


def TestOneInput(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    driver = EndpointDriver()
    for _ in range(provider.ConsumeIntInRange(0, MAX_STEPS)):
        driver.step(
            provider.ConsumeIntInRange(0, ACTIONS - 1),
            provider.ConsumeIntInRange(0, len(SOURCES) - 1),
            provider.ConsumeIntInRange(0, 0xFFFFFF),
            provider.ConsumeBytes(provider.ConsumeIntInRange(0, MAX_BLOB)),
        )
    driver.fall_silent()


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
