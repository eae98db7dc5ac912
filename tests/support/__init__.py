"""Helpers the tests share: builders, servers, processes. Fixtures stay in conftest.py."""
