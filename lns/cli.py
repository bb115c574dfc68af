"""`lns-admin`: the database schema, the address pools and their leases (DESIGN.md section 7);
a running node's sessions, tunnels and status through its management API (lns.node_admin).

    lns-admin [--config lns.toml | --database-url URL] COMMAND ...

The database is `--database-url`, else `[database] url` of `--config`, else the
`LNS_DATABASE_URL` environment variable (which keeps a password out of the
process list), else `[database] url` of ./lns.toml. Lists print a table for
people, or JSON with `--json`. Every error prints one line on stderr and exits
non-zero (2 for a malformed command line, 1 for everything else); never a
traceback, never the database password.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, TextIO

from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from aaa.radius.adoption import Adopted, take_from
from lns import __version__, node_admin
from lns.config import Config, ConfigError, LnsSection, load_config
from lns.db import database, nodes, preflight
from lns.iccid import InvalidIccid, parse_iccid
from lns.pool import admin, allocator
from lns.pool.allocator import Lease, PoolError

PROG = "lns-admin"
DEFAULT_CONFIG = "lns.toml"
URL_VARIABLE = "LNS_DATABASE_URL"
DEBUG_VARIABLE = "LNS_ADMIN_DEBUG"
DEAD_AFTER = LnsSection().dead_after  # without --config: the default


class UsageError(Exception):
    """A malformed argument found after parsing (an address, an ICCID)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, as every other error (argparse would print the usage first).
        self.exit(2, f"{PROG}: error: {message} (see {self.prog} --help)\n")


@dataclass(frozen=True, slots=True)
class _Context:
    engine: Engine
    config: Config | None
    out: TextIO
    json: bool


Handler = Callable[[_Context, argparse.Namespace], str | None]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status (0 on success)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a malformed command line
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    if getattr(args, "node_command", None) is not None:
        if args.database_url is not None:
            return _fail(
                "error: session, tunnel and status need --config, not a database", status=2
            )
        return node_admin.run(args, args.config or DEFAULT_CONFIG)
    url: str | None = None
    try:
        config, url = _database(args)
        # A mistyped SQLite path must not become an empty database: only
        # `db upgrade` creates the file.
        creating = args.command == "db" and args.action == "upgrade"
        preflight.require_sqlite_file(url, create=creating)
        engine = database.create_engine(url, pool_size=1)
        try:
            context = _Context(engine, config, sys.stdout, getattr(args, "json", False))
            if args.command != "db":
                database.require_current(engine)
            message = args.handler(context, args)
        finally:
            engine.dispose()
    except UsageError as exc:
        return _fail(f"error: {exc}", status=2)
    except (
        PoolError,
        ConfigError,
        InvalidIccid,
        database.DatabaseUrlError,
        database.SchemaNotCurrent,
        preflight.DatabaseUnusable,
    ) as exc:
        return _fail(str(exc))
    except DBAPIError as exc:
        return _fail(_database_failure(exc, url))
    except SQLAlchemyError as exc:
        return _fail(f"database error: {_first_line(str(exc), url)}")
    except Exception as exc:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        return _fail(
            f"internal error: {type(exc).__name__}: {_first_line(str(exc), url)} "
            f"(set {DEBUG_VARIABLE}=1 for the traceback)"
        )
    if message:
        print(message)
    return 0


def _fail(reason: str, *, status: int = 1) -> int:
    print(f"{PROG}: {reason}", file=sys.stderr)
    return status


def _first_line(text: str, url: str | None) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    if url is not None:
        try:
            password = make_url(url).password
        except ArgumentError:
            password = None
        if password:
            line = line.replace(str(password), "***")
    return line


def _database_failure(exc: DBAPIError, url: str | None) -> str:
    if url is None:
        return f"database error: {_first_line(str(exc.orig), url)}"
    return f"cannot use {preflight.describe_error(exc, url)}"


def _database(args: argparse.Namespace) -> tuple[Config | None, str]:
    """The loaded configuration (if one is used) and the database URL."""
    if args.database_url is not None:
        return None, args.database_url
    if args.config is None and os.environ.get(URL_VARIABLE):
        return None, os.environ[URL_VARIABLE]
    config = load_config(args.config or DEFAULT_CONFIG)
    return config, config.database.url


# --- Arguments ---


def _address(text: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise UsageError(f"not an IPv4 address: {text!r}") from None


def _iccid(text: str) -> str:
    try:
        return parse_iccid(text)
    except InvalidIccid:
        raise UsageError(f"not an ICCID (19 or 20 digits): {text!r}") from None


# --- Commands ---


def _db_upgrade(context: _Context, args: argparse.Namespace) -> str:
    before = database.current(context.engine)
    database.upgrade(context.engine)
    after = database.current(context.engine)
    if before == after:
        return f"database already at revision {after} (head)"
    return f"database upgraded from revision {before or 'none'} to {after} (head)"


def _db_current(context: _Context, args: argparse.Namespace) -> None:
    revision = database.current(context.engine)
    head = database.head()
    if context.json:
        _print_json(context, {"revision": revision, "head": head, "current": revision == head})
        return
    state = "head" if revision == head else f"head is {head}: run `{PROG} db upgrade`"
    print(f"{revision or 'none'} ({state})", file=context.out)


def _pool_add(context: _Context, args: argparse.Namespace) -> str:
    exclude = list(args.exclude)
    notes = []
    if context.config is not None:
        # The LNS's own PPP address must never be a peer's.
        own = context.config.ppp.local_address
        if own in admin.parse_cidr(args.cidr) and not any(_covers(e, own) for e in exclude):
            exclude.append(str(own))
            notes.append(f"excluded {own}, the LNS's own address ([ppp] local_address)")
    if not args.keep_network_broadcast:
        skipped = [
            str(address)
            for address in admin.network_and_broadcast(admin.parse_cidr(args.cidr))
            if not any(_covers(e, address) for e in exclude)
        ]
        if skipped:
            notes.append(
                f"excluded {' and '.join(skipped)}, the range's network and broadcast"
                " addresses (--keep-network-broadcast keeps them)"
            )
    with context.engine.begin() as connection:
        info, created = admin.add_range(
            connection,
            args.name,
            args.cidr,
            exclude,
            keep_network_broadcast=args.keep_network_broadcast,
        )
    excluded = f", excluding {', '.join(info.exclusions)}" if info.exclusions else ""
    pool = f"new pool {args.name!r}" if created else f"pool {args.name!r}"
    return "\n".join([*notes, f"added {info.cidr} to {pool}: {info.size} addresses{excluded}"])


def _covers(exclusion: str, address: ipaddress.IPv4Address) -> bool:
    try:
        return address in ipaddress.ip_network(exclusion, strict=False)
    except ValueError:
        return False  # add_range reports the malformed exclusion


def _usage_json(usage: admin.PoolUsage) -> dict[str, Any]:
    return {
        "name": usage.name,
        "size": usage.size,
        "in_use": usage.in_use,
        "reserved": usage.reserved,
        "free": usage.free,
        "ranges": [
            {"cidr": r.cidr, "exclusions": list(r.exclusions), "size": r.size} for r in usage.ranges
        ],
    }


def _pool_list(context: _Context, args: argparse.Namespace) -> None:
    with context.engine.begin() as connection:
        pools = admin.pool_usage(connection)
    if context.json:
        _print_json(context, [_usage_json(u) for u in pools])
        return
    _print_table(
        context,
        ["POOL", "SIZE", "IN USE", "RESERVED", "FREE", "RANGES"],
        [
            [u.name, u.size, u.in_use, u.reserved, u.free, " ".join(r.cidr for r in u.ranges)]
            for u in pools
        ],
    )


def _pool_show(context: _Context, args: argparse.Namespace) -> None:
    with context.engine.begin() as connection:
        detail = admin.show_pool(connection, args.name)
    usage = detail.usage
    if context.json:
        _print_json(
            context,
            {
                **_usage_json(usage),
                "reservations": [
                    {
                        "address": str(r.address),
                        "iccid": r.iccid,
                        "reserved_at": r.reserved_at.isoformat(),
                        "in_use": r.in_use,
                    }
                    for r in detail.reservations
                ],
            },
        )
        return
    out = context.out
    print(
        f"pool {usage.name}: {usage.size} addresses, {usage.in_use} in use, "
        f"{usage.reserved} reserved, {usage.free} free",
        file=out,
    )
    print("", file=out)
    _print_table(
        context,
        ["RANGE", "SIZE", "EXCLUDED"],
        [[r.cidr, r.size, " ".join(r.exclusions) or "-"] for r in usage.ranges],
    )
    print("", file=out)
    _print_table(
        context,
        ["RESERVED", "ICCID", "IN USE", "SINCE"],
        [
            [r.address, r.iccid, "yes" if r.in_use else "no", _time(r.reserved_at)]
            for r in detail.reservations
        ],
        empty="no reservations",
    )


def _pool_remove(context: _Context, args: argparse.Namespace) -> str:
    with context.engine.begin() as connection:
        adopted: list[Adopted] = []
        if args.force:
            holders = {lease.node for lease in admin.list_leases(connection, pool=args.name)}
            adopted = _take_from(context, connection, holders)
        dropped = admin.remove_pool(connection, args.name, force=args.force)
    tail = f", dropping {dropped} live lease(s)" if dropped else ""
    return f"removed pool {args.name!r}{tail}{_adopted(adopted)}"


def _pool_reserve(context: _Context, args: argparse.Namespace) -> str:
    address, iccid = _address(args.address), _iccid(args.iccid)
    with context.engine.begin() as connection:
        admin.reserve(connection, args.name, address, iccid)
    return f"reserved {address} of pool {args.name!r} for ICCID {iccid}"


def _pool_unreserve(context: _Context, args: argparse.Namespace) -> str:
    address = _address(args.address)
    with context.engine.begin() as connection:
        reservation = admin.unreserve(connection, args.name, address)
    return f"unreserved {address} of pool {args.name!r} (was ICCID {reservation.iccid})"


def _lease_json(lease: Lease) -> dict[str, Any]:
    return {
        "pool": lease.pool,
        "address": str(lease.address),
        "iccid": lease.iccid,
        "node": lease.node,
        "tunnel_id": lease.tunnel_id,
        "session_id": lease.session_id,
        "started_at": lease.started_at.isoformat(),
        "origin": lease.origin.value,
    }


def _lease_list(context: _Context, args: argparse.Namespace) -> None:
    iccid = None if args.iccid is None else _iccid(args.iccid)
    with context.engine.begin() as connection:
        leases = admin.list_leases(connection, pool=args.pool, iccid=iccid, node=args.node)
    if context.json:
        _print_json(context, [_lease_json(lease) for lease in leases])
        return
    _print_table(
        context,
        ["POOL", "ADDRESS", "ICCID", "NODE", "TUNNEL", "SESSION", "SINCE", "BY"],
        [
            [
                lease.pool,
                lease.address,
                lease.iccid,
                lease.node,
                lease.tunnel_id,
                lease.session_id,
                _time(lease.started_at),
                lease.origin.value,
            ]
            for lease in leases
        ],
        empty="no live leases",
    )


def _lease_release(context: _Context, args: argparse.Namespace) -> str:
    address = _address(args.address)
    with context.engine.begin() as connection:
        held = admin.list_leases(connection)
        holders = {lease.node for lease in held if lease.address == address}
        adopted = _take_from(context, connection, holders)
        if adopted:  # the dead holder's leases ended with its adoption
            [lease] = [lease for lease in held if lease.address == address]
        else:
            lease = admin.release_address(connection, address)
    return f"released {address} (ICCID {lease.iccid} on node {lease.node!r}){_adopted(adopted)}"


def _lease_reclaim(context: _Context, args: argparse.Namespace) -> str:
    with context.engine.begin() as connection:
        adopted = _take_from(context, connection, {args.node})
        count = allocator.reclaim_node(connection, args.node)
    count += sum(node.leases for node in adopted)
    return f"released {count} lease(s) of node {args.node!r}{_adopted(adopted)}"


def _take_from(context: _Context, connection: Connection, holders: set[str]) -> list[Adopted]:
    """Refuse to take leases from a running node; adopt a dead one (DESIGN.md section 9)."""
    dead_after = context.config.lns.dead_after if context.config is not None else DEAD_AFTER
    now = datetime.now(UTC)
    found = (take_from(connection, node, PROG, now, dead_after) for node in sorted(holders))
    return [adopted for adopted in found if adopted is not None]


def _adopted(adopted: list[Adopted]) -> str:
    return "".join(
        f"; node {node.name!r} was dead: adopted it ({node.stops} accounting Stop(s) spooled,"
        f" its spool to be delivered by a running node)"
        for node in adopted
    )


def _node_list(context: _Context, args: argparse.Namespace) -> None:
    dead_after = context.config.lns.dead_after if context.config is not None else DEAD_AFTER
    now = datetime.now(UTC)
    with context.engine.begin() as connection:
        states = nodes.list_nodes(connection)
        live = Counter(lease.node for lease in admin.list_leases(connection))
    if context.json:
        _print_json(
            context,
            [
                {
                    "name": state.name,
                    "address": state.address,
                    "version": state.version,
                    "host": state.host,
                    "pid": state.pid,
                    "started_at": state.started_at.isoformat(),
                    "heartbeat_age": round((now - state.heartbeat_at).total_seconds(), 1),
                    "sessions": state.sessions,
                    "live_leases": live[state.name],
                    "spool_depth": state.spool_depth,
                    "status": state.status(now, dead_after),
                    "adopted_by": state.adopted_by,
                }
                for state in states
            ],
        )
        return
    _print_table(
        context,
        ["NODE", "ADDRESS", "VERSION", "HEARTBEAT", "SESSIONS", "LEASES", "SPOOL", "STATUS"],
        [
            [
                state.name,
                state.address,
                state.version,
                f"{(now - state.heartbeat_at).total_seconds():.0f} s ago",
                state.sessions,
                live[state.name],
                state.spool_depth,
                state.status(now, dead_after)
                + (f" by {state.adopted_by}" if state.adopted_by else ""),
            ]
            for state in states
        ],
        empty="no node has run on this database",
    )


# --- Output ---


def _time(value: Any) -> str:
    return str(value.strftime("%Y-%m-%d %H:%M:%S"))


def _print_json(context: _Context, value: object) -> None:
    print(json.dumps(value, indent=2), file=context.out)


def _print_table(
    context: _Context, headers: list[str], rows: list[list[Any]], *, empty: str = ""
) -> None:
    if not rows and empty:
        print(empty, file=context.out)
        return
    cells = [headers, *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(),
            file=context.out,
        )


# --- The command line ---


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Manage the lns database (schema, address pools, leases) and a running"
        " node (sessions, tunnels, status).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--config",
        metavar="PATH",
        help=f"lns configuration file, for its [database] url (default: ${URL_VARIABLE}, "
        f"else {DEFAULT_CONFIG})",
    )
    source.add_argument("--database-url", metavar="URL", help="the database URL itself")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        group: Any, name: str, handler: Handler, help_text: str, *, lists: bool = False
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        if lists:
            sub.add_argument("--json", action="store_true", help="print JSON for scripts")
        return sub

    db = commands.add_parser("db", help="the database schema").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    command(db, "upgrade", _db_upgrade, "create or upgrade the schema (alembic migrations)")
    command(db, "current", _db_current, "print the schema revision", lists=True)

    pool = commands.add_parser("pool", help="address pools").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    add = command(
        pool,
        "add",
        _pool_add,
        "add a range to a pool, creating the pool; its network and broadcast addresses "
        "are excluded unless --keep-network-broadcast (with --config, the LNS's own "
        "[ppp] local_address is excluded too)",
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument("cidr", metavar="CIDR", help="an IPv4 network, at most a /16")
    add.add_argument(
        "--exclude",
        metavar="ADDR",
        action="append",
        default=[],
        help="an address or CIDR of the range never to hand out (repeatable)",
    )
    add.add_argument(
        "--keep-network-broadcast",
        action="store_true",
        help="hand out the range's network and broadcast addresses too (left out by "
        "default: embedded IP stacks often reject an address ending in .0 or .255; "
        "a /31 or /32 has neither)",
    )
    command(pool, "list", _pool_list, "every pool: size, in use, reserved, free", lists=True)
    show = command(pool, "show", _pool_show, "one pool: ranges and reservations", lists=True)
    show.add_argument("name", metavar="NAME")
    remove = command(pool, "remove", _pool_remove, "delete a pool and its ranges")
    remove.add_argument("name", metavar="NAME")
    remove.add_argument(
        "--force", action="store_true", help="even with live leases (they are dropped)"
    )
    reserve = command(pool, "reserve", _pool_reserve, "keep an address for one ICCID")
    reserve.add_argument("name", metavar="NAME")
    reserve.add_argument("address", metavar="ADDRESS")
    reserve.add_argument("--iccid", metavar="ICCID", required=True)
    unreserve = command(pool, "unreserve", _pool_unreserve, "drop an address's reservation")
    unreserve.add_argument("name", metavar="NAME")
    unreserve.add_argument("address", metavar="ADDRESS")

    lease = commands.add_parser("lease", help="live leases of every node").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    listing = command(lease, "list", _lease_list, "live leases, filtered", lists=True)
    listing.add_argument("--pool", metavar="NAME")
    listing.add_argument("--iccid", metavar="ICCID")
    listing.add_argument("--node", metavar="NAME")
    release = command(lease, "release", _lease_release, "end the live lease on an address")
    release.add_argument("address", metavar="ADDRESS")
    reclaim = command(
        lease, "reclaim", _lease_reclaim, "end every lease of a node that is gone for good"
    )
    reclaim.add_argument("--node", metavar="NAME", required=True)

    node = commands.add_parser("node", help="the nodes sharing this database").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    command(
        node,
        "list",
        _node_list,
        "every node: address, version, heartbeat age, sessions, leases, spool, alive or dead",
        lists=True,
    )
    node_admin.add_commands(commands)
    return parser


if __name__ == "__main__":
    sys.exit(main())
