"""`python -m workbench.steering`: see `workbench.cli.steering`."""

from workbench.cli.steering import main

if __name__ == "__main__":
    raise SystemExit(main())
