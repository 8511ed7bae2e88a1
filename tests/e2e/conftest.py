"""Fixtures for the real-browser tests: one server per app and one browser per session."""

from __future__ import annotations

import pytest

from .harness import launch_browser, start_server


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_browser(p)
        yield b
        b.close()


def _server(app, tmp_path_factory):
    server = start_server(app, tmp_path_factory.mktemp(f"e2e-{app}"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory):
    yield from _server("lab", tmp_path_factory)


@pytest.fixture(scope="session")
def notebook_server(tmp_path_factory):
    yield from _server("notebook", tmp_path_factory)


@pytest.fixture(params=["lab", "notebook"])
def any_server(request):
    """Each test using this runs once in JupyterLab 4 and once in Notebook 7."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    pg = context.new_page()
    yield pg
    context.close()
