"""dizzy.cli: the ``dizzy`` command, a thin layer over dizzy.peer."""

from dizzy.cli.main import app

__all__ = ["app"]
