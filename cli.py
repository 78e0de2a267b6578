"""Run the streamvol command line from a checkout: ``python cli.py --help``."""

from streamvol.cli import app

if __name__ == "__main__":
    app()
