"""The command's output: the library's log messages as plain lines (info and debug on stdout,
warnings and errors on stderr), and one copy of everything however many processes run."""

from __future__ import annotations

import logging
import os
import sys

from grasp_lora import distributed as dist


class _ConsoleHandler(logging.Handler):
    """Messages as plain lines: info and debug on stdout (beside the command's results), warnings
    and errors on stderr. The stream is looked up at each message, so ranks > 0, whose stdout is
    redirected to /dev/null, stay silent."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never take the command down
            self.handleError(record)


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"{record.levelname.lower()}: {text}" if record.levelno >= logging.WARNING else text


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """The `grasp_lora` logger's handler and level: `quiet` warnings only, `verbose` debug too."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    log = logging.getLogger("grasp_lora")
    for h in list(log.handlers):
        if isinstance(h, _ConsoleHandler):
            log.removeHandler(h)
    handler = _ConsoleHandler()
    handler.setFormatter(_Format("%(name)s: %(message)s" if verbose else "%(message)s"))
    log.addHandler(handler)
    log.setLevel(level)


def quiet_other_ranks() -> None:
    """One copy of the command's output: ranks > 0 print nothing (errors still go to stderr)."""
    if not dist.is_main():
        sys.stdout = open(os.devnull, "w")
