"""`python -m workbench.compare`: see `workbench.analyses.compare`."""

from workbench.analyses.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
