"""The text of one-line errors: a failure to write files, a missing optional dependency, and
an exception's reason in short."""
import errno


def install_extra(extra: str) -> str:
    """How to install an optional dependency group of setup.cfg (`export`, `tfrecord`, ...)."""
    return f"pip install -e '.[{extra}]'"


def short_reason(e: BaseException, limit: int = 200) -> str:
    """An exception's message on one line, at most `limit` characters (its type if empty)."""
    return " ".join(str(e).split())[:limit] or type(e).__name__


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
    return f"could not {what} ({short_reason(e)}); check the disk and {flag}"
