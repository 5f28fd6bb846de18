"""`python -m workbench.organism.digits`: the command line (`workbench.organism.digits.cli`)."""

from workbench.organism.digits.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
