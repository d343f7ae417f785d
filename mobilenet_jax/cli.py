"""Command lines generated from the run `Config`, and the one-line way every command fails."""
import argparse
import contextlib
import dataclasses
import errno
import os
import sys
import tempfile
import time
import typing

from mobilenet_jax.config import Config


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad flag ends in one line and exit code 2 (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parser(module: str, doc: str) -> OneLineErrorParser:
    """The parser of `python -m <module>`, its module docstring as the description."""
    return OneLineErrorParser(prog=f"python -m {module}", description=doc,
                              formatter_class=argparse.RawDescriptionHelpFormatter)


def _flag_type(f):
    hint = typing.get_type_hints(Config)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def add_config_flags(parser: argparse.ArgumentParser, names=None, all_optional=False) -> None:
    """Add one flag per Config field (or per field in `names`).

    With `all_optional`, every default is None so a caller can tell given flags from defaults.
    """
    for f in dataclasses.fields(Config):
        if (names is not None and f.name not in names) or f.metadata["from_data"]:
            continue
        flags = f.metadata["flags"] or ("--" + f.name.replace("_", "-"),)
        typ = _flag_type(f)
        default = None if all_optional else f.default
        help_text = f"{f.metadata['help']} (default: {f.default})"
        if typ is bool:
            parser.add_argument(*flags, dest=f.name, default=default, help=help_text,
                                action=argparse.BooleanOptionalAction)
        else:
            parser.add_argument(*flags, dest=f.name, type=typ, default=default, help=help_text,
                                choices=f.metadata["choices"],
                                metavar=None if f.metadata["choices"] else typ.__name__.upper())


def given_flags(args: argparse.Namespace, names=None) -> dict:
    """The Config fields given on the command line (flags added with `all_optional`)."""
    return {k: v for k, v in vars(args).items()
            if v is not None and k in Config.__dataclass_fields__
            and (names is None or k in names)}


def write_error_line(e: Exception, what: str, flag: str = "--workdir") -> str:
    """One line for a failure to write files: what failed, why, how to fix it (pass another
    `flag`). Looks through the exceptions that libraries (orbax) wrap an OSError in."""
    cause = e
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    code, text = getattr(cause, "errno", None), str(e)
    if code == errno.ENOSPC or "No space left" in text:
        return f"could not {what}: the disk is full; free space or pass {flag} on another disk"
    if code in (errno.EROFS, errno.EACCES, errno.EPERM) or "Read-only file system" in text:
        return f"could not {what}: it is read-only or not writable; pass a writable {flag}"
    if code == errno.ENOENT or "No such file" in text:
        return (f"could not {what}: its directory does not exist (or vanished); pass a "
                f"writable {flag}")
    reason = " ".join(text.split())[:200] or type(e).__name__
    return f"could not {what} ({reason}); check the disk and {flag}"


def fail(message: str) -> typing.NoReturn:
    """End a command with one clear line and exit code 2 (bad input, not a bug)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


@contextlib.contextmanager
def stderr_held(settle_s: float = 0.0, drop: bool = False):
    """Hold what any thread (Python or native) writes to stderr meanwhile, and write it out
    afterwards unless an exception ends the block (after `settle_s` for threads still
    writing): libraries log around a failure (orbax, tensorstore, the TFLite converter), all
    noise around the one line the caller reports. With `drop`, nothing held is written."""
    sys.stderr.flush()
    real = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            time.sleep(settle_s)
            raise
        else:
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(real, 2)
            os.close(real)
            if not (failed or drop):
                held.seek(0)
                os.write(2, held.read())
