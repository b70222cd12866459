"""`flexunet VERB CONFIG`: each verb reads arguments, loads the config, calls one library function, prints a summary."""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import typer

from flexunet.cli import stages, tools  # noqa: F401  (each registers its verbs on the app, in this order)
from flexunet.cli.app import app
from flexunet.cli.tools import prepare_app
from flexunet.console import error, error_console, say
from flexunet.errors import FlexunetError
from flexunet.files import output_error

__all__ = ["app", "main", "prepare_app"]


def _usage_error(exc: Exception) -> int | None:
    """The exit code of a command-line usage error from typer's parser (typer's own or click's), else None.

    Recent typer carries its own copy of click and older typer uses click itself, so the parser's exceptions are
    recognised by what they offer (a message and an exit code), not by importing either module."""
    message, code = getattr(exc, "format_message", None), getattr(exc, "exit_code", None)
    if not callable(message) or not isinstance(code, int):
        return None
    if type(exc).__name__ == "NoArgsIsHelpError":  # `flexunet` or a verb alone: its help, as --help shows it
        say(str(message()))
        return code or 2
    context = getattr(exc, "ctx", None)
    command = getattr(context, "command_path", None) or "flexunet"
    text = " ".join(str(message()).split()) or type(exc).__name__
    error(f"{text} (see: {command} --help)")
    return code or 2


def main() -> None:
    """Entry point: user and usage errors print one line per problem on stderr and exit 2.

    --debug shows the traceback.
    """
    debug = "--debug" in sys.argv or os.environ.get("FLEXUNET_DEBUG") == "1"
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    try:
        code = app(standalone_mode=False)  # returns a command's typer.Exit code instead of raising it
        if isinstance(code, int) and code:
            sys.exit(code)
    except FlexunetError as exc:
        if debug:
            raise
        for line in str(exc).splitlines():
            error(line)
        sys.exit(2)
    except KeyboardInterrupt:
        error_console.print("interrupted: the last completed epoch's checkpoint is kept (resume with --resume)",
                            markup=False)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except OSError as exc:  # outside flexunet's own writers (a DataLoader, TensorBoard, a library's own file)
        if debug or (exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) and exc.filename is None):
            raise
        error(str(output_error(Path(exc.filename or "output"), exc)))
        sys.exit(2)
    except Exception as exc:
        if type(exc).__name__ == "Abort":  # Ctrl-C at a prompt (typer's or click's Abort)
            sys.exit(130)
        code = None if debug else _usage_error(exc)
        if code is None:
            raise
        sys.exit(code)


if __name__ == "__main__":
    main()
