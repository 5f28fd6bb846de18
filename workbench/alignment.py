"""`python -m workbench.alignment`: see `workbench.cli.alignment`."""

from workbench.cli.alignment import main

if __name__ == "__main__":
    raise SystemExit(main())
