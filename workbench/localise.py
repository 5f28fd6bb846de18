"""`python -m workbench.localise`: see `workbench.cli.localise`."""

from workbench.cli.localise import main

if __name__ == "__main__":
    raise SystemExit(main())
