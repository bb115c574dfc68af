"""The whole endpoint under random datagrams from several sources (issue 12), hypothesis side.

lns.testing.endpoint_driver states the invariant: no exception, state within its
caps after every step, no reflection towards an unlisted source, and every
tunnel freed by its timers once the peers fall silent. tests/fuzz/fuzz_endpoint.py
drives the same steps from atheris for longer runs.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lns.testing.endpoint_driver import ACTIONS, SOURCES, EndpointDriver

steps = st.lists(
    st.tuples(
        st.integers(0, ACTIONS - 1),
        st.integers(0, len(SOURCES) - 1),
        st.integers(0, 0xFFFFFF),
        st.binary(max_size=40),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps)
def test_state_stays_within_its_caps_and_the_timers_free_it(
    steps: list[tuple[int, int, int, bytes]],
) -> None:
    driver = EndpointDriver()
    for step in steps:
        driver.step(*step)
    driver.fall_silent()


def test_the_driver_reaches_established_tunnels_and_calls() -> None:
    # Not vacuous: the protocol steps alone bring tunnels up and connect calls.
    driver = EndpointDriver()
    script = [(1, 0, 41, b""), (2, 0, 1, b""), (5, 0, 10, b""), (6, 0, 0, b""), (4, 0, 0, b"")]
    for step in script:
        driver.step(*step)
    [conn] = driver.endpoint.tunnels.values()
    assert conn.was_established
    assert [c.state.value for c in conn.calls.values()] == ["established"]
    driver.fall_silent()


def test_the_fuzzers_find_a_tunnel_refused_in_its_own_sccrq_leaves_nothing_behind() -> None:
    """fuzz_endpoint found it: an SCCRQ whose tunnel never adopted the peer's Assigned
    Tunnel ID (refused in that SCCRQ) left its retransmission entry behind for good."""
    driver = EndpointDriver()
    steps = [
        (1, 0, 58623, b"\xe4\xe4?\xe4\xe4\xe4\xe4\xe4"),
        (10, 1, 582911, b"?\x1c)\xfc\x08\xa0\x08#"),
        (10, 1, 2295968, b"\xdd"),
        *[(0, 0, 0, b"")] * 14,
    ]
    for step in steps:
        driver.step(*step)
    driver.fall_silent()
