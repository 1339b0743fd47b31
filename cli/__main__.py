"""``python -m andon.cli ...`` is ``andon ...``."""

from andon.cli.main import main

main()
