"""lns.testing.freeradius.users_file: the users file FreeRADIUS reads
(mods-config/files/authorize), one entry per user, check items on the first line."""

from __future__ import annotations

from lns.testing.freeradius import RadiusUser, users_file


def test_entries_with_check_and_reply_items() -> None:
    text = users_file(
        [
            RadiusUser("8944000000000000001", "pw"),
            RadiusUser(
                "8944000000000000002",
                "pw2",
                check=("NAS-Port-Type == Virtual",),
                reply=("Framed-IP-Address = 100.64.0.9", 'Framed-Pool = "gold"'),
            ),
            RadiusUser("8944000000000000003", None, check=("Auth-Type := Reject",)),
        ],
        comment="the test's users",
    )
    assert text == (
        "# the test's users\n"
        "\n"
        '8944000000000000001\tCleartext-Password := "pw"\n'
        "\n"
        '8944000000000000002\tCleartext-Password := "pw2", NAS-Port-Type == Virtual\n'
        "\tFramed-IP-Address = 100.64.0.9,\n"
        '\tFramed-Pool = "gold"\n'
        "\n"
        "8944000000000000003\tAuth-Type := Reject\n"
    )
