"""Shared pytest wiring. Each fixture family lives in its own plugin module under tests/fixtures."""

pytest_plugins = [
    "tests.fixtures.datastores",
    "tests.fixtures.kube",
    "tests.fixtures.chat",
    "tests.fixtures.operator",
    "tests.fixtures.node",
    "tests.fixtures.relay",
]
