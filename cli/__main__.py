"""``python -m cli ...`` is ``andon ...``."""

from cli.main import main

main()
