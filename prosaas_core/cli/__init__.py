"""The ``prosaas`` command line, one module per command group."""
