"""The three example services under a service name taken from ``RC_TEST_SERVICE_NAME``.

A task service answers only as the broker user named after it, and broker users are global to the broker,
so a test that gives every service its own user needs service names no other test uses. Run one with
``rc-task tests.coordinator.named_examples:Portal`` and ``RC_TEST_SERVICE_NAME=portal-<hex>``.
"""

from __future__ import annotations

import os

from examples.file_service import FileService as _FileService
from examples.portal import Portal as _Portal
from examples.search_index import SearchIndex as _SearchIndex

_NAME = os.environ.get("RC_TEST_SERVICE_NAME", "").strip()


class Portal(_Portal):
    service = _NAME or _Portal.service


class SearchIndex(_SearchIndex):
    service = _NAME or _SearchIndex.service


class FileService(_FileService):
    service = _NAME or _FileService.service
