"""The one exception class of the command line (see :mod:`sasa.cli`)."""

from __future__ import annotations


class CLIError(Exception):
    """A problem the user can fix; printed as one line."""
