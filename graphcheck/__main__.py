"""`python -m graphcheck` runs the command line."""

from graphcheck.cli import main

if __name__ == "__main__":
    main()
