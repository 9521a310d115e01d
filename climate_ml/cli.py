"""The ``climate-ml`` command line: parse, call the library, print (the commands live in
``climate_ml/commands/``). Errors are one line on stderr with a non-zero exit (2 for bad input);
``--debug`` shows the full traceback."""

from __future__ import annotations

import sys
import traceback

import typer

from climate_ml.commands import app
from climate_ml.errors import ClimateMLError

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    command = typer.main.get_command(app)
    try:
        # without standalone mode click returns a command's typer.Exit code instead of raising it
        code = command.main(args=argv, prog_name="climate-ml", standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C into Exit(130), silently
            print("aborted (interrupted)", file=sys.stderr)
        return code if isinstance(code, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # click's usage errors (Typer ships its own click)
        if type(exc).__name__ == "NoArgsIsHelpError":  # a command group alone: its help, as click shows it
            exc.show()
            return exc.exit_code
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print(f"error: {exc.format_message()}{hint}".splitlines()[0], file=sys.stderr)
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("aborted (interrupted)", file=sys.stderr)
        return 130
    except ClimateMLError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # an unexpected failure: still one line unless --debug
        if debug:
            traceback.print_exc()
        print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)".splitlines()[0], file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
