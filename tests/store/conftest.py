"""Fixtures for the store tests."""

from tests.store.zfs_fixture import zfs_pool

__all__ = ["zfs_pool"]
