"""`python -m graphcheck` runs the command line."""

from graphcheck.cli import main

main()
