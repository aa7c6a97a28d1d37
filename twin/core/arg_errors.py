"""argparse's refusals as one line, as a scenario's are: "error: FLAG: got VALUE; allowed: WHAT", exit 2.

argparse prints its usage (3-4 lines) above the error; `twin` (twin.cli.main.TwinParser) and every `python -m
calibration.<script>` (calibration.entry.JudgeParser) build their parsers on OneLineParser (s27walk: twin's
in round 2, calibration's in round 3). --help is argparse's own. Here in twin.core so that both may import it
(calibration never imports the CLI).
"""

from __future__ import annotations

import argparse
import re

_TYPE_WORDS = {"int": "an integer", "float": "a number"}


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser whose refusals are one line naming the argument, the value and what is allowed, exit 2."""

    def _action(self, name: str):
        return next((a for a in self._actions if name in a.option_strings or name in (a.dest, a.metavar)), None)

    def _allowed(self, action) -> str:
        if action is None:
            return "see --help"
        if action.choices:
            return ", ".join(map(str, action.choices))
        words = _TYPE_WORDS.get(getattr(action.type, "__name__", ""), "")
        shown = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
        if words:
            return f"{words} ({shown})"
        return f"{shown}, {action.help}" if action.help and not action.option_strings else str(shown)

    def one_line(self, message: str) -> str:
        """argparse's message as "FLAG: got VALUE; allowed: WHAT" (the message as it is where no pattern fits)."""
        m = re.fullmatch(r"argument (\S+?)(?:/\S+)?: invalid (?:(\w+) value|choice): '(.*?)'(?: \(choose from .*\))?", message, re.S)
        if m:
            return f"{m[1]}: got {m[3]!r}; allowed: {self._allowed(self._action(m[1]))}"
        m = re.fullmatch(r"argument (\S+?)(?:/\S+)?: expected (.*) arguments?", message)
        if m:
            return f"{m[1]}: got no value; allowed: {self._allowed(self._action(m[1]))}"
        m = re.fullmatch(r"argument (\S+?)(?:/\S+)?: ignored explicit argument '(.*)'", message, re.S)
        if m:   # --quiet=3
            return f"{m[1]}: got {m[2]!r}; allowed: no value (a switch)"
        m = re.fullmatch(r"argument (\S+?)(?:/\S+)?: not allowed with argument (\S+)", message)
        if m:
            return f"{m[1]}: got it with {m[2]}; allowed: one of {m[1]}, {m[2]}"
        m = re.fullmatch(r"argument (\S+?)(?:/\S+)?: (got .*; allowed: .*)", message, re.S)
        if m:   # a type's own refusal, already in these words (calibration.entry.folder, ...)
            return f"{m[1]}: {m[2]}"
        m = re.fullmatch(r"unrecognized arguments: (.*)", message)
        if m:
            return f"arguments in {self.prog}: got {m[1]!r}; allowed: the options and arguments of `{self.prog} --help`"
        m = re.fullmatch(r"the following arguments are required: (.*)", message)
        if m:
            needed = [n.strip() for n in m[1].split(",")]
            return "; ".join(f"{n}: got nothing; allowed: {self._allowed(self._action(n))}" for n in needed)
        return message

    def error(self, message: str):
        self.exit(2, f"error: {self.one_line(message)}\n")

