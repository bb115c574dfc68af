"""The management API and /metrics on Twisted Web (DESIGN.md section 10).

JSON under ``/api/v1/`` on ``[management] listen``::

    GET    /api/v1/sessions[?iccid=&address=&lac=&tunnel=&state=&limit=&after=]
    GET    /api/v1/sessions/{acct_session_id}
    DELETE /api/v1/sessions/{acct_session_id}     CDN, Stop with Admin-Reset, lease released
    GET    /api/v1/tunnels
    GET    /api/v1/tunnels/{tunnel_id}
    DELETE /api/v1/tunnels/{tunnel_id}            StopCCN
    GET    /api/v1/status
    GET    /metrics                               Prometheus text format

Every request carries ``Authorization: Bearer TOKEN`` when ``[management] token`` is
set (compared in constant time, ``hmac.compare_digest``); ``/metrics`` is exempt with
``metrics_public = true``. Without a token the configuration allows only a loopback
listen address. Errors are JSON, ``{"error": "..."}``, with their status: 400 for a
bad filter, 401 for a missing or wrong token, 404 for an unknown path or id, 405 for
a method the path does not take. This module only routes, authenticates and writes:
what is read and done is ``lns.adapters.node_state``'s, the metrics
``lns.adapters.metrics``'s. Requests are not logged one by one (a Prometheus scrape
every few seconds would fill the log); the listener's start is.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IReactorTCP
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from lns.adapters.metrics import CONTENT_TYPE, MetricsExporter
from lns.adapters.node_state import (
    DEFAULT_PAGE,
    MAX_PAGE,
    InvalidRequest,
    NodeState,
    SessionFilter,
)
from lns.config import ManagementSection

__all__ = ["ManagementApi", "ManagementService", "make_management"]

API = ("api", "v1")
_FILTERS = frozenset({"iccid", "address", "lac", "tunnel", "state", "limit", "after"})


class _HttpError(Exception):
    def __init__(
        self, status: int, message: str, headers: dict[bytes, bytes] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


_Body = dict[str, Any] | list[Any]
_Handler = Callable[[list[str], dict[str, str]], "_Body | defer.Deferred[_Body]"]


class ManagementApi(resource.Resource):
    """The root resource: routing, authentication, JSON in and out."""

    isLeaf = True
    log = Logger()

    def __init__(
        self, state: NodeState, settings: ManagementSection, metrics: MetricsExporter
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.state = state
        self.settings = settings  # replaced on reload (token, metrics_public)
        self.metrics = metrics
        self._routes: dict[tuple[str, ...], dict[bytes, _Handler]] = {
            ("sessions",): {b"GET": self._sessions},
            ("sessions", "*"): {b"GET": self._session, b"DELETE": self._kill_session},
            ("tunnels",): {b"GET": self._tunnels},
            ("tunnels", "*"): {b"GET": self._tunnel, b"DELETE": self._kill_tunnel},
            ("status",): {b"GET": self._status},
        }

    # --- dispatch -----------------------------------------------------------------------

    def render(self, request: server.Request) -> bytes | int:
        try:
            path = [segment.decode("utf-8") for segment in request.postpath or ()]
        except UnicodeDecodeError:
            return self._error(request, _HttpError(404, "no such path"))
        if path and path[-1] == "":
            path.pop()  # "/api/v1/sessions/" is "/api/v1/sessions"
        method = request.method
        if method == b"HEAD":
            method = b"GET"
        try:
            if path == ["metrics"]:
                if not self.settings.metrics_public:
                    self._authenticate(request)
                self._allow(method, (b"GET",))
                return self._async(request, self.metrics.scrape(), self._write_metrics)
            self._authenticate(request)
            handler, arguments = self._route(path, method)
            query = _query(request)
            answer = handler(arguments, query)
        except _HttpError as error:
            return self._error(request, error)
        except Exception:
            self.log.failure("management API: {method} {path} failed", method=method, path=path)
            return self._error(request, _HttpError(500, "internal error (see the node's log)"))
        if isinstance(answer, defer.Deferred):
            return self._async(request, answer, self._write_json)
        return self._json(request, 200, answer)

    def _authenticate(self, request: server.Request) -> None:
        token = self.settings.token
        if token is None:
            return  # loopback only (the configuration refuses anything else)
        given = request.getHeader(b"authorization") or b""
        scheme, _, value = given.partition(b" ")
        challenge = {b"www-authenticate": b'Bearer realm="lns"'}
        if scheme.lower() != b"bearer" or not value.strip():
            raise _HttpError(401, "a bearer token is required", challenge)
        if not hmac.compare_digest(value.strip(), token.value):
            raise _HttpError(401, "wrong token", challenge)

    def _route(self, path: list[str], method: bytes) -> tuple[_Handler, list[str]]:
        if tuple(path[:2]) != API or len(path) < 3:
            raise _HttpError(404, "no such path")
        rest = path[2:]
        pattern = tuple(rest[:1]) + tuple("*" for _ in rest[1:])
        methods = self._routes.get(pattern)
        if methods is None:
            raise _HttpError(404, "no such path")
        handler = self._allow(method, tuple(methods))
        return methods[handler], rest[1:]

    @staticmethod
    def _allow(method: bytes, allowed: tuple[bytes, ...]) -> bytes:
        if method not in allowed:
            names = ", ".join(m.decode() for m in allowed)
            raise _HttpError(
                405,
                f"method {method.decode(errors='replace')} not allowed here (only {names})",
                {b"allow": names.encode()},
            )
        return method

    # --- handlers -----------------------------------------------------------------------

    def _sessions(self, arguments: list[str], query: dict[str, str]) -> _Body:
        unknown = sorted(set(query) - _FILTERS)
        if unknown:
            known = ", ".join(sorted(_FILTERS))
            raise _HttpError(400, f"unknown parameter {unknown[0]!r} (known: {known})")
        try:
            where = SessionFilter.parse(query)
            limit = _number(query, "limit", 1, MAX_PAGE, DEFAULT_PAGE)
            after = _number(query, "after", 0, 2**63, 0)
        except InvalidRequest as exc:
            raise _HttpError(400, str(exc)) from None
        page = self.state.sessions(where, limit, after)
        return {"sessions": page.sessions, "total": page.total, "next": page.next}

    def _session(self, arguments: list[str], query: dict[str, str]) -> _Body:
        _no_query(query)
        found = self.state.session(arguments[0])
        if found is None:
            raise _HttpError(404, f"no session with Acct-Session-Id {arguments[0]!r}")
        return found

    def _kill_session(self, arguments: list[str], query: dict[str, str]) -> _Body:
        _no_query(query)
        killed = self.state.kill_session(arguments[0])
        if killed is None:
            raise _HttpError(404, f"no session with Acct-Session-Id {arguments[0]!r}")
        self.log.info(
            "management API: session {id} (ICCID {iccid}) cleared by an operator",
            id=killed["acct_session_id"],
            iccid=killed["iccid"],
        )
        return {"cleared": killed}

    def _tunnels(self, arguments: list[str], query: dict[str, str]) -> _Body:
        _no_query(query)
        return {"tunnels": self.state.tunnels()}

    def _tunnel(self, arguments: list[str], query: dict[str, str]) -> _Body:
        _no_query(query)
        found = self.state.tunnel(_tunnel_id(arguments[0]))
        if found is None:
            raise _HttpError(404, f"no tunnel {arguments[0]}")
        return found

    def _kill_tunnel(self, arguments: list[str], query: dict[str, str]) -> _Body:
        _no_query(query)
        killed = self.state.kill_tunnel(_tunnel_id(arguments[0]))
        if killed is None:
            raise _HttpError(404, f"no open tunnel {arguments[0]}")
        self.log.info(
            "management API: tunnel {tunnel} of LAC {lac} cleared by an operator"
            " ({sessions} sessions)",
            tunnel=killed["tunnel_id"],
            lac=killed["lac"],
            sessions=killed["sessions"],
        )
        return {"cleared": killed}

    def _status(self, arguments: list[str], query: dict[str, str]) -> defer.Deferred[_Body]:
        _no_query(query)
        return self.state.status().addCallback(_as_body)

    # --- output -------------------------------------------------------------------------

    def _async(
        self,
        request: server.Request,
        answer: defer.Deferred[Any],
        write: Callable[[server.Request, Any], None],
    ) -> int:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def done(result: Any) -> None:
            if not gone:
                write(request, result)

        def failed(failure: Failure) -> None:
            self.log.failure("management API request failed", failure)
            if not gone:
                self._error(request, _HttpError(500, "internal error (see the node's log)"))
                request.finish()

        answer.addCallbacks(done, failed)
        return server.NOT_DONE_YET

    def _write_json(self, request: server.Request, body: _Body) -> None:
        request.write(self._json(request, 200, body))
        request.finish()

    @staticmethod
    def _write_metrics(request: server.Request, text: bytes) -> None:
        request.setResponseCode(200)
        request.setHeader(b"content-type", CONTENT_TYPE)
        request.write(text)
        request.finish()

    @staticmethod
    def _json(request: server.Request, status: int, body: _Body) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(body, indent=1).encode() + b"\n"

    def _error(self, request: server.Request, error: _HttpError) -> bytes:
        for name, value in error.headers.items():
            request.setHeader(name, value)
        return self._json(request, error.status, {"error": error.message})


def _as_body(status: dict[str, Any]) -> _Body:
    return status


def _query(request: server.Request) -> dict[str, str]:
    query: dict[str, str] = {}
    for name, values in (request.args or {}).items():
        try:
            key = name.decode("utf-8")
            decoded = [value.decode("utf-8") for value in values]
        except UnicodeDecodeError:
            raise _HttpError(400, "query parameters must be UTF-8") from None
        if len(decoded) != 1:
            raise _HttpError(400, f"parameter {key!r} given {len(decoded)} times")
        query[key] = decoded[0]
    return query


def _no_query(query: dict[str, str]) -> None:
    if query:
        raise _HttpError(400, f"unknown parameter {sorted(query)[0]!r}")


def _number(query: dict[str, str], name: str, low: int, high: int, default: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise InvalidRequest(f"{name}: expected an integer from {low} to {high}, got {text!r}")
    return int(text)


def _tunnel_id(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise _HttpError(404, f"no tunnel {text!r} (tunnel IDs are 1 to 65535)")
    return int(text)


class _QuietSite(server.Site):
    """No access log: a scrape every few seconds would be most of the node's log."""

    noisy = False

    def log(self, request: Any) -> None:
        pass


class ManagementService(service.Service):
    """Listens on ``[management] listen`` (bound in privilegedStartService, so a port in
    use stops the start) and serves :class:`ManagementApi`."""

    log = Logger()

    def __init__(self, api: ManagementApi, reactor: IReactorTCP) -> None:
        self.api = api
        self.reactor = reactor
        self.host = api.settings.listen_host
        self.port_number = api.settings.listen_port
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        self._listen()

    def _listen(self) -> None:
        if self.port is None:
            site = _QuietSite(self.api)  # type: ignore[no-untyped-call]
            self.port = self.reactor.listenTCP(
                self.port_number,
                site,  # type: ignore[arg-type]  # a Site is a ServerFactory; stubs disagree
                interface=self.host,
            )

    def startService(self) -> None:
        self._listen()
        super().startService()  # type: ignore[no-untyped-call]
        address = self.port.getHost() if self.port is not None else None
        port = getattr(address, "port", self.port_number)
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.api.settings.token is None:
            self.log.info(
                "management API on http://{host}:{port}/api/v1/ without a token:"
                " loopback only, no authentication",
                host=host,
                port=port,
            )
        else:
            self.log.info(
                "management API on http://{host}:{port}/api/v1/ (bearer token required,"
                " /metrics {metrics})",
                host=host,
                port=port,
                metrics="public" if self.api.settings.metrics_public else "too",
            )

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        port, self.port = self.port, None
        if port is None:
            return defer.succeed(None)
        return defer.maybeDeferred(port.stopListening).addCallback(lambda _: None)


def make_management(
    settings: ManagementSection, state: NodeState, reactor: IReactorTCP
) -> ManagementService:
    """The API and /metrics of a node, on ``[management] listen``."""
    return ManagementService(ManagementApi(state, settings, MetricsExporter(state)), reactor)
