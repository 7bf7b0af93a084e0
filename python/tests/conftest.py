"""Fixtures: a real qbusd in a temporary directory, ready when it says so (sd_notify
READY=1 on a socket the fixture binds; see daemons.py). Nothing here sleeps or polls."""
import os
import re
import sys
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the package from the source tree, uninstalled
sys.path.insert(0, str(HERE))
# The source tree's own libqbus, beside the qbusd daemons.py takes, unless told otherwise.
_BUILT = HERE.parents[1] / "build" / "client-lib" / "libqbus.so.0"
if "QBUS_LIBRARY" not in os.environ and _BUILT.exists():
    os.environ["QBUS_LIBRARY"] = str(_BUILT)

from daemons import running_qbusd  # noqa: E402


@pytest.fixture(scope="session")
def qbusd():
    """A qbusd shared by the tests; yields its address "unix:TMP/qbus.sock"."""
    with running_qbusd() as d:
        yield d.address


@pytest.fixture
def own_qbusd():
    """A qbusd for one test, which may kill it: yields the Daemon (`.address`, `.kill()`)."""
    with running_qbusd() as d:
        yield d


@pytest.fixture
def client(qbusd):
    import qbus
    with qbus.Client(qbusd, name="pytest") as c:
        yield c


@pytest.fixture
def key(request):
    """A queue key of its own for each test."""
    name = re.sub(r"[^A-Za-z0-9._:/-]", ".", request.node.name)
    return f"py.{name}.{uuid.uuid4().hex[:6]}"
