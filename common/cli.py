"""
Command-line plumbing shared by the scripts: the error type for user mistakes, and
configuration from a dataclass, optional config/*.py files and --key=value overrides.

    python train.py config/train_shakespeare_char.py --device=cpu --max_iters=100

A config file looks like Python (nanoGPT's format) but is read as data, never run: each line is a
comment or `name = literal` (a number, string, True/False/None, or a list/tuple/dict of those),
so a config file from someone else can't do anything but set options.
"""

import ast
import dataclasses
import math
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


def parse_config(config_cls, argv, files_may_set_others=False):
    """Build a config_cls from config files and --key=value arguments, in the order given."""
    return build_config(config_cls, parse_options(config_cls, argv, files_may_set_others))


def parse_options(config_cls, argv, files_may_set_others=False):
    """{field: value} of the options that argv sets, config files and --key=value in the order given.
    files_may_set_others: a tool that reads another script's config files (tools/inspect_model.py reads
    train.py's) takes the options it knows from them and leaves the others."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    values = {}
    for arg in argv:
        if not arg.startswith("--"):
            values.update(read_config_file(arg, fields, files_may_set_others))
            continue
        key, sep, text = arg[2:].partition("=")
        if not sep:
            raise UserError(f"argument {arg!r} must look like --{key}=VALUE")
        if key not in fields:
            raise UserError(f"unknown option --{key}; known options: {', '.join(sorted(fields))}")
        values[key] = parse_value(key, text, fields[key].type)
    return values


def check_ranges(cfg, positive=(), at_least_one=(), non_negative=(), fractions=()):
    """A config's __post_init__ check of its numbers: a ValueError naming the first field out of range.
    positive: > 0; at_least_one: >= 1 (counts); non_negative: >= 0 (0 usually turns a thing off);
    fractions: in [0, 1). Every config also has a seed, which torch takes as an unsigned 32-bit number."""
    rules = [(positive, lambda v: v > 0, "positive"), (at_least_one, lambda v: v >= 1, "at least 1"),
             (non_negative, lambda v: v >= 0, "0 or more"), (fractions, lambda v: 0 <= v < 1, "in [0, 1)"),
             (("seed",), lambda v: 0 <= v < 2**32, "in [0, 2**32)")]
    for names, holds, wanted in rules:
        for name in names:
            if not holds(getattr(cfg, name)):
                raise ValueError(f"--{name} must be {wanted}, got {getattr(cfg, name)}")


def check_choice(cfg, name, choices):
    """A config's __post_init__ check that the field name holds one of choices (a ValueError if not)."""
    if getattr(cfg, name) not in choices:
        raise ValueError(f"--{name} must be one of {', '.join(choices)}, got {getattr(cfg, name)!r}")


def build_config(config_cls, values):
    try:
        return config_cls(**values)
    except ValueError as e:  # the dataclass's own checks of impossible values
        raise UserError(str(e)) from None


def resumed_config(config_cls, saved, given, may_change, run):
    """The settings of a run being resumed: its own (saved: the asdict of its config), with the options
    in may_change that the command line gives. Any other option given must agree with the run's: a
    resumed run that trained differently would be neither that run nor a new one. run names the run
    in messages ("the run in out-x")."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    for key in saved:
        if key not in fields:  # written by an older version of the script
            raise UserError(f"{run} used --{key}, an option this version does not have; "
                            f"start a new run in another --out_dir")
    merged = build_config(config_cls, {**saved, **given})
    for key in given:
        # compared after the dataclass's own normalising (1 == 1.0, head "auto" -> its choice)
        if key not in may_change and getattr(merged, key) != saved.get(key, getattr(merged, key)):
            raise UserError(f"{run} used --{key}={saved[key]}: drop --{key}, or start a new run in another "
                            f"--out_dir (a resumed run keeps its own settings; only "
                            f"{', '.join(sorted(may_change))} may change)")
    return merged


def read_config_file(path, fields, others_allowed=False):
    """The options a config file sets, read as data: a line that is not `name = literal` is refused."""
    if not path.endswith(".py"):
        raise UserError(f"argument {path!r} is neither --key=value nor a config/*.py file")
    try:
        with open(path, encoding="utf-8-sig") as f:
            source = f.read()
    except FileNotFoundError:
        raise UserError(f"config file {path} not found") from None
    except UnicodeDecodeError as e:
        raise UserError(f"config file {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise UserError(f"config file {path}: {e.strerror}") from None
    try:
        module = ast.parse(source, filename=path)
    except (SyntaxError, ValueError) as e:  # ValueError: a null byte, in some Python versions
        line = f":{e.lineno}" if getattr(e, "lineno", None) else ""
        raise UserError(f"{path}{line}: {getattr(e, 'msg', e)}") from None
    values = {}
    for i, statement in enumerate(module.body):
        if i == 0 and isinstance(statement, ast.Expr) and isinstance(getattr(statement.value, "value", None), str):
            continue  # a docstring
        key, value = literal_assignment(statement, path)
        if key not in fields and others_allowed:
            continue
        if key not in fields:
            raise UserError(f"{path}:{statement.lineno}: unknown option {key!r}; known options: "
                            f"{', '.join(sorted(fields))}")
        values[key] = check_type(key, value, fields[key].type, f"{path}:{statement.lineno}")
    return values


def literal_assignment(statement, path):
    """(name, value) of a `name = literal` statement; anything else would need running, so it is refused."""
    refusal = (f"{path}:{statement.lineno}: only `name = literal` lines are allowed in a config file (it is "
               f"read as data, not run)")
    if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name)):
        raise UserError(f"{refusal}; found {ast.unparse(statement).splitlines()[0]!r}")
    try:
        value = ast.literal_eval(statement.value)
    except (ValueError, TypeError, RecursionError):  # an expression: arithmetic, a name, a call
        raise UserError(f"{refusal}; write the value of {ast.unparse(statement.value)!r} itself") from None
    return statement.targets[0].id, value


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
            value = kind(text)
        except ValueError:
            raise UserError(f"--{key} takes a number ({kind.__name__}), got {text!r}") from None
        return check_finite(value, f"--{key}")
    return text


def check_type(key, value, annotation, source):
    kind = base_type(annotation)
    if value is None and kind is not annotation:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UserError(f"{source}: {key} must be {kind.__name__}, got {value!r}")
    return check_finite(value, f"{source}: {key}")


def check_finite(value, what):
    """NaN and infinity pass every `x > 0` test and then train nothing: no option takes them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{what} must be a finite number, got {value}")
    return value
