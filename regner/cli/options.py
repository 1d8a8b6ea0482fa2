"""The one option parser of the commands that are not Hydra apps (predict, export, serve, report).

Each command declares its options once, as :class:`Option` rows of a :class:`Command`; the same
declaration gives ``--help`` (one line per key with its default), parses ``key=value`` arguments
(the style of the Hydra commands), also accepts ``--key value`` / ``--key=value`` and the declared
short aliases (``-o DIR``, ``--no-plots``), and converts and checks every value: a bad one is a
:class:`~regner.errors.ConfigError` naming the key, the value and what is accepted.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass, field
from typing import Any

from regner.errors import ConfigError, UserError

DEVICES = "auto, cpu, mps, cuda or cuda:N"
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class Option:
    """One ``key=value`` option. ``kind``: str, int, float, bool, choice or device; ``low``/``high``
    bound numbers; ``expected`` replaces the generated description of what is accepted."""

    name: str
    default: str | None
    help: str
    kind: str = "str"
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    required: str = ""  # what to say when it is missing (empty: optional)
    expected: str = ""

    def convert(self, raw: str | None) -> Any:
        if raw is None or (self.required and not raw):
            if self.required:
                raise ConfigError(self.name, None, self.required)
            return None
        if self.kind == "int":
            return self._int(raw)
        if self.kind == "float":
            return self._float(raw)
        if self.kind == "bool":
            if raw.lower() in TRUE + FALSE:
                return raw.lower() in TRUE
            raise ConfigError(self.name, raw, "true or false")
        if self.kind == "choice":
            if raw not in self.choices:
                shown = list(self.choices)
                raise ConfigError(self.name, raw, ", ".join(shown[:-1]) + f" or {shown[-1]}" if len(shown) > 1
                                  else shown[0])
            return raw
        if self.kind == "threads":  # low and expected as declared: 1, "auto or an integer ≥ 1"
            return raw if raw == "auto" else self._int(raw)
        if self.kind == "device":
            from regner.config.validation import DEVICE

            if not DEVICE.match(raw):
                raise ConfigError(self.name, raw, DEVICES)
        return raw

    def _int(self, raw: str) -> int:
        low, high = int(self.low if self.low is not None else 0), self.high
        expected = self.expected or (f"an integer ≥ {low}" + (f" and ≤ {int(high)}" if high is not None else ""))
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(self.name, raw, expected) from None
        if value < low or (high is not None and value > high):
            raise ConfigError(self.name, value, expected)
        return value

    def _float(self, raw: str) -> float:
        expected = self.expected or "a finite number"
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(self.name, raw, expected) from None
        if not math.isfinite(value) or (self.low is not None and value < self.low):
            raise ConfigError(self.name, value, expected)
        return value


CHECKPOINT = Option("ckpt", None, "run directory, or its checkpoint/ directory (required)",
                    required="a run directory or checkpoint directory (ckpt=RUN)")


@dataclass(frozen=True)
class Command:
    """A ``key=value`` command: its usage line, what it does, its options, and (for ``report``) the
    positional arguments it takes (``positional``: their name; at least one is then required)."""

    name: str
    usage: str
    description: str
    options: tuple[Option, ...]
    positional: str = ""
    aliases: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # "-o": ("out", None: takes a value)

    def help(self) -> str:
        width = max(len(o.name) for o in self.options) + 2
        lines = [f"  {o.name:<{width}}{o.help}" + (f" [default: {o.default}]" if o.default else "")
                 for o in self.options]
        shorthands = [f"{alias} = {key}={value if value is not None else 'VALUE'}"
                      for alias, (key, value) in self.aliases.items()]
        tail = f"\n\nAlso accepted: --key value, {', '.join(shorthands)}." if shorthands else \
            "\n\nAlso accepted: --key value."
        return f"{self.usage}\n\n{self.description}\n\n" + "\n".join(lines) + tail

    def parse(self, argv: list[str]) -> dict[str, Any]:
        """The options (converted, checked) and, under ``"_args"``, the positional arguments."""
        by_name = {o.name: o for o in self.options}
        raw: dict[str, str | None] = {o.name: o.default for o in self.options}
        positional: list[str] = []
        args = list(argv)
        while args:
            arg = args.pop(0)
            key, value = self._split(arg, args, by_name)
            if key is None:
                positional.append(arg)
                continue
            raw[key] = value
        if positional and not self.positional:
            raise UserError(f"unknown argument {positional[0]!r}: expected key=value with a key among "
                            f"{', '.join(by_name)} (regner {self.name} --help)")
        if self.positional and not positional:
            raise UserError(f"regner {self.name} needs at least one {self.positional} (regner {self.name} --help)")
        options = {name: by_name[name].convert(value) for name, value in raw.items()}
        options["_args"] = positional
        return options

    def _split(self, arg: str, rest: list[str], by_name: dict[str, Option]) -> tuple[str | None, str | None]:
        """(key, value) of one argument, taking the next one for ``--key value``; (None, None) for a
        positional argument."""
        if arg in self.aliases:
            key, value = self.aliases[arg]
            return key, value if value is not None else self._value(arg, rest)
        if arg.startswith("--") and len(arg) > 2:
            key, sep, value = arg[2:].partition("=")
            key = key.replace("-", "_")
            if key not in by_name:
                raise self._unknown(arg, by_name)
            return key, value if sep else self._value(arg, rest)
        key, sep, value = arg.partition("=")
        if sep:
            if key not in by_name:
                raise self._unknown(arg, by_name)
            return key, value
        if arg.startswith("-") and arg != "-":
            raise self._unknown(arg, by_name)
        return None, None

    def _value(self, arg: str, rest: list[str]) -> str:
        if not rest:
            raise UserError(f"{arg} needs a value (regner {self.name} --help)")
        return rest.pop(0)

    def _unknown(self, arg: str, by_name: dict[str, Option]) -> UserError:
        return UserError(f"unknown argument {arg!r}: expected key=value with a key among {', '.join(by_name)} "
                         f"(regner {self.name} --help)")


def wants_help(argv: list[str], command: Command) -> bool:
    """The start of every ``key=value`` command: print its help and say so (True), or send logging
    to stderr (stdout carries only results) and go on (False)."""
    if any(a in ("-h", "--help", "help") for a in argv):
        print(command.help())
        return True
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return False


def require_extra(command: str, modules: tuple[str, ...], extra: str = "serve") -> None:
    """A UserError naming the missing optional dependencies of ``command`` and how to install them."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"regner {command} needs {' and '.join(missing)}: pip install 'regner[{extra}]'")
