"""`python -m workbench.alignment`: see `workbench.analyses.alignment`."""

from workbench.analyses.alignment import main

if __name__ == "__main__":
    raise SystemExit(main())
