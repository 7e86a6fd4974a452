"""One module per ``sasa`` subcommand, each with ``register_command(subparsers, add_common_flags)``
(listed in :data:`sasa.cli.app.COMMAND_MODULES`). Standard library only at module level; the work
is imported when the command runs."""
