"""`python -m inferd` is the `inferd` command."""

from inferd.cli import main

main()
