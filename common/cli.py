"""
Command-line plumbing shared by the scripts: the error type for user mistakes, and
configuration from a dataclass, optional config/*.py files and --key=value overrides.

    python train.py config/train_shakespeare_char.py --device=cpu --max_iters=100

A config file is plain Python that assigns some of the dataclass's fields (nanoGPT's format);
it is run on its own, and only the names it assigns are read from it.
"""

import dataclasses
import runpy
import sys
import typing


class UserError(Exception):
    """A mistake in what the user asked for: printed as one line, without a traceback."""


def run_main(main):
    """Run main(argv); a UserError becomes a one-line message on stderr and exit status 2."""
    try:
        main(sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def parse_config(config_cls, argv):
    """Build a config_cls from config files and --key=value arguments, in the order given."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    values = {}
    for arg in argv:
        if not arg.startswith("--"):
            values.update(read_config_file(arg, fields))
            continue
        key, sep, text = arg[2:].partition("=")
        if not sep:
            raise UserError(f"argument {arg!r} must look like --{key}=VALUE")
        if key not in fields:
            raise UserError(f"unknown option --{key}; known options: {', '.join(sorted(fields))}")
        values[key] = parse_value(key, text, fields[key].type)
    try:
        return config_cls(**values)
    except ValueError as e:  # the dataclass's own checks of impossible values
        raise UserError(str(e)) from None


def read_config_file(path, fields):
    if not path.endswith(".py"):
        raise UserError(f"argument {path!r} is neither --key=value nor a config/*.py file")
    try:
        assigned = runpy.run_path(path)
    except FileNotFoundError:
        raise UserError(f"config file {path} not found") from None
    values = {}
    for key, value in assigned.items():
        if key.startswith("_") or isinstance(value, type(sys)):  # dunders and imported modules
            continue
        if key not in fields:
            raise UserError(f"{path}: unknown option {key!r}; known options: {', '.join(sorted(fields))}")
        values[key] = check_type(key, value, fields[key].type, path)
    return values


def base_type(annotation):
    """int | None -> int; other annotations are returned as they are."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def parse_value(key, text, annotation):
    kind = base_type(annotation)
    if text in ("None", "none") and kind is not annotation:  # an optional field
        return None
    if kind is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise UserError(f"--{key} takes True or False, got {text!r}")
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise UserError(f"--{key} takes a number ({kind.__name__}), got {text!r}") from None
    return text


def check_type(key, value, annotation, source):
    kind = base_type(annotation)
    if value is None and kind is not annotation:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UserError(f"{source}: {key} must be {kind.__name__}, got {value!r}")
    return value
