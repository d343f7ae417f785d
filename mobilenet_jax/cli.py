"""Command lines generated from the run `Config`, and the one-line way every command fails."""
import argparse
import dataclasses
import sys
import typing

from mobilenet_jax import config


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad flag ends in one line and exit code 2 (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parser(module: str, doc: str) -> OneLineErrorParser:
    """The parser of `python -m <module>`, its module docstring as the description."""
    return OneLineErrorParser(prog=f"python -m {module}", description=doc,
                              formatter_class=argparse.RawDescriptionHelpFormatter)


def _selected(group: str, name: str, groups, names) -> bool:
    return (groups is None and names is None) or group in (groups or ()) or name in (names or ())


def add_config_flags(parser: argparse.ArgumentParser, groups=None, names=None,
                     all_optional=False, defaults: typing.Optional[dict] = None) -> None:
    """Add one flag per config field, or per field of the `groups` and the fields in `names`,
    with the defaults of config.py or those in `defaults`. With `all_optional`, every default
    is None so a caller can tell given flags from defaults.
    """
    for group, f in config.fields():
        if not _selected(group, f.name, groups, names) or f.metadata["from_data"]:
            continue
        flags = f.metadata["flags"] or ("--" + f.name.replace("_", "-"),)
        hint = typing.get_type_hints(config.GROUPS[group])[f.name]
        typ = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
        shown = (defaults or {}).get(f.name, f.default)
        default = None if all_optional else shown
        help_text = f"{f.metadata['help']} (default: {shown})"
        if typ is bool:
            parser.add_argument(*flags, dest=f.name, default=default, help=help_text,
                                action=argparse.BooleanOptionalAction)
        else:
            parser.add_argument(*flags, dest=f.name, type=typ, default=default, help=help_text,
                                choices=f.metadata["choices"],
                                metavar=None if f.metadata["choices"] else typ.__name__.upper())


def add_compile_cache_flag(parser: argparse.ArgumentParser, default=None) -> None:
    """--compile-cache DIR|off, for `process.use_compile_cache`."""
    parser.add_argument("--compile-cache", default=default, metavar="DIR",
                        help="keep compiled steps in DIR so that the next run of the same "
                             "steps loads them instead of compiling; 'off' disables it "
                             "(default: " + (default or "$JAX_COMPILATION_CACHE_DIR or "
                                              "~/.cache/mobilenet_jax/jax") + ")")


def add_checkpoint_flags(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """--ckpt PATH or --pretrained NAME: the model a command runs (`checkpoint_arg`)."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--ckpt", help="run workdir, checkpoints dir, latest, or step dir")
    group.add_argument("--pretrained", metavar="NAME", help="a model that ships with the "
                       "package instead (cifar10); the same as --ckpt pretrained:NAME")


def checkpoint_arg(args: argparse.Namespace) -> typing.Optional[str]:
    """The checkpoint path of `add_checkpoint_flags`' flags (None where neither was given)."""
    from mobilenet_jax.core import checkpoint  # not at import: it loads JAX and orbax
    return checkpoint.PRETRAINED + args.pretrained if args.pretrained else args.ckpt


def given_flags(args: argparse.Namespace, groups=None, names=None) -> dict:
    """The config fields given on the command line (flags added with `all_optional`), or
    those of the `groups` and in `names`."""
    return {k: v for k, v in vars(args).items() if v is not None and k in config.GROUP_OF
            and _selected(config.GROUP_OF[k], k, groups, names)}


def fail(message: str) -> typing.NoReturn:
    """End a command with one clear line and exit code 2 (bad input, not a bug)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)
