"""The entry-point layer: the ``andon`` command (one module per command group) and the demo.
Importing this package does nothing; ``cli.main`` assembles the command."""
