"""Options shared by every test tier."""

from .support import localdns

localdns.install()  # <user>.hub.localhost -> 127.0.0.1, as browsers do


def pytest_addoption(parser):
    parser.addoption("--keep-stack", action="store_true", help="leave the e2e stacks running and print their URLs")
    parser.addoption("--screenshots", default=None, help="regenerate the README screenshots into this folder")
