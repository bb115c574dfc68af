"""Longest-prefix match over IPv4 routes (RFC 1812 section 5.2.4.3), keyed by u32 addresses.

The data plane asks one question per packet from the network: which session owns this
destination? Nearly always the answer is a session's own address, so host routes (/32)
live in one plain dict and a hit costs one lookup. Shorter prefixes (the sessions'
Framed-Routes, RFC 2865 section 5.22) sit in one dict per prefix length, keyed by the
masked address, and are tried from the longest length present to the shortest.

A route names one value. Adding a network that is already present replaces its value (the
newest session wins), and removing a network takes the value it is expected to map to, so
an older owner that goes away never removes the newer owner's route.
"""

from __future__ import annotations

import ipaddress
from typing import Generic, TypeVar

T = TypeVar("T")


class RouteTable(Generic[T]):
    """Routes from IPv4 networks to values; :meth:`lookup` returns the longest match.

    Values must not be None: :meth:`lookup` answers None for "no route".
    """

    __slots__ = ("_by_length", "_hosts", "_search")

    def __init__(self) -> None:
        self._hosts: dict[int, T] = {}
        self._by_length: dict[int, dict[int, T]] = {}
        # (netmask, routes of that length), longest prefix first: the order lookup tries.
        self._search: tuple[tuple[int, dict[int, T]], ...] = ()

    def _reorder(self) -> None:
        self._search = tuple(
            ((0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF, self._by_length[length])
            for length in sorted(self._by_length, reverse=True)
        )

    def add(self, network: ipaddress.IPv4Network, value: T) -> None:
        """Route ``network`` to ``value``, replacing whatever it was routed to."""
        key = int(network.network_address)
        length = network.prefixlen
        if length == 32:
            self._hosts[key] = value
            return
        routes = self._by_length.get(length)
        if routes is None:
            routes = self._by_length[length] = {}
            routes[key] = value
            self._reorder()
        else:
            routes[key] = value

    def remove(self, network: ipaddress.IPv4Network, value: T) -> bool:
        """Remove the route for ``network`` if it maps to ``value`` (compared with ``==``).

        Returns whether a route was removed.
        """
        key = int(network.network_address)
        length = network.prefixlen
        routes = self._hosts if length == 32 else self._by_length.get(length)
        if routes is None or key not in routes or routes[key] != value:
            return False
        del routes[key]
        if length != 32 and not routes:
            del self._by_length[length]
            self._reorder()
        return True

    def get(self, network: ipaddress.IPv4Network) -> T | None:
        """The value ``network`` itself is routed to (an exact match, not a lookup)."""
        key = int(network.network_address)
        length = network.prefixlen
        routes = self._hosts if length == 32 else self._by_length.get(length)
        return None if routes is None else routes.get(key)

    def lookup(self, address: int) -> T | None:
        """The value of the longest route that contains ``address`` (a u32), or None."""
        value = self._hosts.get(address)
        if value is not None:
            return value
        for mask, routes in self._search:
            value = routes.get(address & mask)
            if value is not None:
                return value
        return None

    def __len__(self) -> int:
        return len(self._hosts) + sum(len(routes) for routes in self._by_length.values())
