"""The command line, ``hublink [--config PATH] COMMAND ...`` (contract section 5).

The only package that prints for the user or decides an exit code:

- :mod:`hublink.cli.main`: the parser, and ``main`` mapping every error to an exit code;
- :mod:`hublink.cli.commands`: one function per command;
- :mod:`hublink.cli.inputs`: what a person types or pipes in (prompts, the
  password, ``--data``), each ending in a clear error rather than a traceback;
- :mod:`hublink.cli.failures`: the words for an error that escaped a command.

Heavy modules are imported inside the commands, so ``--version`` and
``--help`` start fast (``tests/test_imports.py``).
"""

from __future__ import annotations

from hublink.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
