"""What every live Elasticsearch test module shares: the server's address, the module-level
skip when there is none, and the `client` fixture (imported by the modules that use it).

Not a `tests/es/conftest.py`: the test modules import helpers as `from conftest import ...`
(rootdir-relative imports), and a second module named `conftest` would shadow the first."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from elasticsearch import Elasticsearch

SKIP_REASON = ("ISR_ES_URL not set: the live Elasticsearch suite needs a server "
               "(make test starts one; or ISR_ES_URL=http://localhost:9200 after docker compose up)")  # fmt: skip


def require_es() -> str:
    """$ISR_ES_URL, or skip the calling module with the reason `pytest -ra` shows."""
    url = os.environ.get("ISR_ES_URL")
    if not url:
        pytest.skip(SKIP_REASON, allow_module_level=True)
    return url


def connect(url: str) -> Elasticsearch:
    return Elasticsearch(url, api_key=os.environ.get("ISR_ES_API_KEY"), request_timeout=120)


@pytest.fixture(scope="module")
def client() -> Iterator[Elasticsearch]:
    es = connect(require_es())
    es.cluster.health(wait_for_status="yellow", timeout="60s")  # GET / may be absent (405)
    yield es
    # whatever a failed test left behind (each test also deletes its own)
    es.indices.delete(index="isr-test-*", ignore_unavailable=True, allow_no_indices=True)
    es.close()
