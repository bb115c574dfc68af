"""``twistd lns``: command-line options and the service maker."""

from __future__ import annotations

from twisted.application import service
from twisted.python import usage

from lns.adapters.reload import enable_reload
from lns.adapters.services import make_service
from lns.config import Config, ConfigError, load_config


class Options(usage.Options):
    optParameters = [  # noqa: RUF012 (Twisted's declarative options)
        ["config", "c", "lns.toml", "The TOML configuration file."],
    ]

    def postOptions(self) -> None:
        try:
            self["loaded"] = load_config(self["config"])
        except ConfigError as exc:
            raise usage.UsageError(str(exc)) from None


def makeService(options: Options) -> service.IService:
    config = options["loaded"]
    assert isinstance(config, Config)
    node = make_service(config)
    enable_reload(node, config, options["config"])  # SIGHUP reloads the file
    return node
