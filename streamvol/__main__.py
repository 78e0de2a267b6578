"""``python -m streamvol``: the command line."""

from streamvol.cli import app

app(prog_name="streamvol")
