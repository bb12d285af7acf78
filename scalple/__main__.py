"""`python -m scalple`: the same as the `scalple` command."""

from scalple.cli.main import main

main()
