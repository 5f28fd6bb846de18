"""`python -m workbench.screening`: see `workbench.cli.screening`."""

from workbench.cli.screening import main

if __name__ == "__main__":
    raise SystemExit(main())
