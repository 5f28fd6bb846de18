"""`python -m workbench.probe`: the main job (`workbench.cli.job`)."""

from workbench.cli.job import main

if __name__ == "__main__":
    raise SystemExit(main())
