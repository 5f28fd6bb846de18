"""`python -m workbench.compare`: see `workbench.cli.compare`."""

from workbench.cli.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
