"""One-line errors that say what to do, for the mistakes users make most."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from daemons import Daemons, dizzy, make_home, serving
from helpers import agent, genesis

pytestmark = pytest.mark.slow


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as started:
        yield started


def one_line_error(result: object) -> str:
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert result.returncode == 1, result  # type: ignore[attr-defined]
    assert stderr.startswith("dizzy: error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr and "aiohttp" not in stderr, stderr
    return stderr


def test_a_mistyped_home_is_not_created(tmp_path: Path) -> None:
    typo = tmp_path / "hmoe"
    error = one_line_error(dizzy(typo, "entity", "list", check=False))
    assert "no dizzy home" in error and "dizzy init" in error
    assert not typo.exists()
    dizzy(typo, "init")  # init, and only init, makes one
    assert typo.is_dir() and dizzy(typo, "entity", "list").returncode == 0


def test_a_peer_that_is_down_is_named_with_the_reason(tmp_path: Path) -> None:
    home = make_home(tmp_path / "a")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{sock.getsockname()[1]}"
    # sync reports each peer on a line of its own, and fails
    synced = dizzy(home, "sync", down, check=False)
    assert synced.returncode == 1 and "aiohttp" not in synced.stdout + synced.stderr
    expected = f"{down}: FAILED {down}: cannot connect (connection refused); is the peer running?"
    assert synced.stdout == expected + "\n", synced.stdout
    entity = genesis(agent("someone"), "elsewhere").entity  # held by no one here
    error = one_line_error(
        dizzy(home, "fetch", entity, "--to", str(tmp_path / "x"), "--peer", down, check=False)
    )
    assert down in error and "cannot connect" in error and "no entity" not in error, error


def test_a_url_that_is_not_a_dizzy_peer_says_so(tmp_path: Path) -> None:
    async def html(request: web.Request) -> web.Response:
        return web.Response(
            status=404, text="<html><body>Not here</body></html>", content_type="text/html"
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", html)
    home = make_home(tmp_path / "a")
    with serving(app) as url:
        synced = dizzy(home, "sync", url, check=False)
    assert synced.returncode == 1 and "<html>" not in synced.stdout, synced
    assert synced.stdout.startswith(f"{url}: FAILED {url} is not a dizzy peer (HTTP 404"), synced


def test_a_busy_port_is_named(tmp_path: Path, daemons: Daemons) -> None:
    first = daemons.start(make_home(tmp_path / "a"))
    port = first.url.rsplit(":", 1)[1]
    error = one_line_error(
        dizzy(make_home(tmp_path / "b"), "peer", "run", "--port", port, check=False, timeout=30)
    )
    assert f"port {port} is in use" in error, error
