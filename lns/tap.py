"""``twistd lns``: command-line options and the service maker.

Whatever stops a start is one line on standard error and exit status 1
(issue 16): a bad configuration (without twistd's usage text), a log file that
cannot be opened, and every `StartupError` of the node (a port in use, a TUN
device we may not create, an unusable database: lns.adapters.startup), which
twistd would otherwise print as a traceback.

Unless twistd is told where to log (``--logfile``, ``--syslog``, ``--logger``),
the node logs through its own observer (lns.adapters.logwriter): to standard
output or `[log] file`, one write per reactor turn, rotated by size.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any, NoReturn

from twisted.application import service
from twisted.python import usage

import twisted
from aaa.radius.tls import TlsSetupError
from lns import __version__
from lns.adapters.logwriter import LogOutput, LogWriter, open_output, start_log_writer
from lns.adapters.reload import enable_reload
from lns.adapters.services import make_service
from lns.adapters.startup import StartupError
from lns.config import Config, ConfigError, LogSection, load_config
from lns.runtime import default_reactor, settle_garbage_collector

PROG = "lns"


def version_line() -> str:
    python = ".".join(str(part) for part in sys.version_info[:3])
    return f"lns {__version__} (Twisted {twisted.__version__}, Python {python})"


class Options(usage.Options):
    optParameters = [  # noqa: RUF012 (Twisted's declarative options)
        ["config", "c", "lns.toml", "The TOML configuration file."],
    ]

    def opt_version(self) -> NoReturn:
        """Print the version of lns and exit."""
        print(version_line())
        sys.exit(0)

    def postOptions(self) -> None:
        try:
            config = load_config(self["config"])
        except ConfigError as exc:
            raise SystemExit(f"{PROG}: {exc}") from None
        self["loaded"] = config
        self._log_through_lns(config)

    def _log_through_lns(self, config: Config) -> None:
        """Make twistd use the node's log observer, unless it was told otherwise."""
        twistd = getattr(self, "parent", None)
        if twistd is None:
            return
        if twistd.get("logger") or twistd.get("logfile") or twistd.get("syslog"):
            return
        if not twistd.get("nodaemon") and config.log.file is None:
            return  # a daemon has no standard output: twistd's own log file
        try:
            output = open_output(config.log)
        except OSError as exc:
            raise SystemExit(f"{PROG}: [log] file {config.log.file}: {exc.strerror}") from None
        node_log.prepare(output, config.log)
        # twistd imports its --logger by name (after this method, in its own postOptions).
        twistd["logger"] = f"{__name__}.node_log"


class _NodeLog:
    """The factory twistd's ``--logger`` names: the node's LogWriter on its output."""

    def __init__(self) -> None:
        self._prepared: tuple[LogOutput, LogSection] | None = None

    def prepare(self, output: LogOutput, section: LogSection) -> None:
        self._prepared = (output, section)

    def __call__(self) -> LogWriter:
        if self._prepared is None:
            raise RuntimeError("lns.tap.node_log is set up by `twistd lns`")
        output, section = self._prepared
        return start_log_writer(output, section, default_reactor(None))


node_log = _NodeLog()


def makeService(options: Options) -> service.IService:
    config = options["loaded"]
    assert isinstance(config, Config)
    try:
        node = make_service(config)
    except (StartupError, TlsSetupError) as exc:  # TlsSetupError: RadSec files unusable
        raise SystemExit(f"{PROG}: cannot start: {exc}") from None
    enable_reload(node, config, options["config"])  # SIGHUP reloads the file
    default_reactor(None).callWhenRunning(settle_garbage_collector)
    # From here twistd starts the services, and a StartupError would reach the top
    # as a traceback: print its one line instead.
    sys.excepthook = _one_line_for_startup_errors(sys.excepthook)
    return node


Hook = Callable[[type[BaseException], BaseException, TracebackType | None], Any]


def _one_line_for_startup_errors(previous: Hook) -> Hook:
    def hook(
        kind: type[BaseException], value: BaseException, traceback: TracebackType | None
    ) -> None:
        if not isinstance(value, StartupError):
            previous(kind, value, traceback)
            return
        # twistd has redirected sys.stderr into the log by now.
        stderr = sys.__stderr__
        if stderr is not None:
            stderr.write(f"{PROG}: cannot start: {value}\n")
            stderr.flush()

    return hook
