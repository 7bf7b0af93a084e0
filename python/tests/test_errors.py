import pytest

import qbus
from qbus import errors
from qbus._lib import lib

T = 10.0


def test_one_class_per_code_named_as_the_library_names_it():
    for name, code in errors.CODES:
        assert lib.qbus_strerror(code).decode() == name
        cls = errors.error_for(code, "text")
        assert isinstance(cls, qbus.Error) and type(cls) is not qbus.Error
        assert (cls.code, cls.name, str(cls)) == (code, name, "text")
    assert qbus.QueueFull.code == 22 and qbus.IoError.name == "io_error"
    assert issubclass(qbus.Timeout, TimeoutError)
    assert issubclass(qbus.PermissionDenied, PermissionError)
    assert issubclass(qbus.ConnectionClosed, ConnectionError)
    unknown = errors.error_for(999, "odd")
    assert type(unknown) is qbus.Error and unknown.code == 999 and unknown.name == "unknown"


def test_library_errors_carry_its_text(client):
    with pytest.raises(qbus.InvalidKey, match="bad key") as e:
        client.send("bad key", "x")
    assert e.value.code == 20
    with pytest.raises(qbus.ConnectFailed):
        qbus.Client("unix:/nonexistent/qbus.sock", timeout=1)
    with pytest.raises(qbus.BadAddress):
        qbus.Client("carrier-pigeon:home")


@pytest.mark.parametrize("call, message", [
    (lambda c: c.send(3, b"x"), "key must be str, not int"),
    (lambda c: c.send("k", 3), "payload must be bytes, str or a buffer, not int"),
    (lambda c: c.send("k", "x", headers=[("h", 1)]), "headers value must be bytes"),
    (lambda c: c.send("k", "x", headers="h=1"), "headers must be a dict"),
    (lambda c: c.send("k", "x", confirm=1), "confirm must be bool, not int"),
    (lambda c: c.send("k", "x", ttl="1"), "ttl must be a number of seconds, not str"),
    (lambda c: c.send("k", "x", priority=None), "priority must be int, not NoneType"),
    (lambda c: c.receive(b"k"), "key must be str, not bytes"),
    (lambda c: c.receive("k", timeout="1"), "timeout must be a number of seconds"),
    (lambda c: c.receive_batch("k", 1.5), "max must be int, not float"),
    (lambda c: c.ack("m"), "message must be qbus.Message, not str"),
    (lambda c: c.send_to_pid("1", b"x"), "pid must be int, not str"),
    (lambda c: c.publish(None, b"x"), "subject must be str, not NoneType"),
    (lambda c: c.subscribe_subject(1), "pattern must be str, not int"),
    (lambda c: c.send_region("k", b"x"), "region must be qbus.Region, not bytes"),
    (lambda c: c.allocate_region("1"), "size must be int, not str"),
])
def test_wrong_types_name_the_argument(client, call, message):
    with pytest.raises(TypeError, match=message):
        call(client)


def test_bad_values(client):
    with pytest.raises(ValueError, match="NUL"):
        client.send("k\0", "x")
    with pytest.raises(ValueError, match="negative"):
        client.receive("k", -1)
    with pytest.raises(ValueError, match="priority"):
        client.send("k", "x", priority=10)


def test_closed_client(qbusd):
    c = qbus.Client(qbusd)
    c.close()
    c.close()  # twice is fine
    assert c.closed
    with pytest.raises(ValueError, match="closed"):
        c.send("k", "x")


def test_dropped_connection_after_the_daemon_is_killed(own_qbusd):
    c = qbus.Client(own_qbusd.address)
    c.send("k", "x", confirm=True)
    own_qbusd.kill()
    with pytest.raises((qbus.ConnectionClosed, qbus.IoError)):
        c.receive("k", T)
    with pytest.raises((qbus.ConnectionClosed, qbus.IoError)):
        c.send("k", "again", confirm=True)  # and the client stays unusable
    c.close()
