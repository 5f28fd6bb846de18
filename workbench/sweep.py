"""`python -m workbench.sweep`: see `workbench.cli.sweep`."""

from workbench.cli.sweep import main

if __name__ == "__main__":
    raise SystemExit(main())
