"""``python -m dizzy.cli``: the same as the ``dizzy`` command."""

from dizzy.cli.main import app

app(prog_name="dizzy")
