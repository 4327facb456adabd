"""Loggers that cost nothing until a message is logged.

Importing :mod:`logging` (with threading, traceback, string, weakref...) takes ~15 ms,
which every ``jetpack`` start — and so every pod start — would pay for messages nobody
asked for. A debug message is only ever shown after ``--debug`` configured logging, which
imports it; until then :meth:`Logger.debug` does nothing. Warnings import it when needed.
"""

from __future__ import annotations

import sys


class Logger:
    """The subset of :class:`logging.Logger` Jetpack uses, resolved on first use."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def debug(self, msg: str, *args: object) -> None:
        logging = sys.modules.get("logging")
        if logging is not None:  # not imported: nothing configured a handler for debug
            logging.getLogger(self.name).debug(msg, *args)

    def warning(self, msg: str, *args: object) -> None:
        import logging

        logging.getLogger(self.name).warning(msg, *args)


def get_logger(name: str) -> Logger:
    return Logger(name)
