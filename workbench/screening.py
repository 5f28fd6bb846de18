"""`python -m workbench.screening`: see `workbench.analyses.screening`."""

from workbench.analyses.screening import main

if __name__ == "__main__":
    raise SystemExit(main())
