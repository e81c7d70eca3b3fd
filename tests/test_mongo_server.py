import pytest

from recsys.errors import MongoServerError
from recsys.mongo_server import EmbeddedMongo, free_port, ping


def test_start_status_stop(tmp_path):
    server = EmbeddedMongo(state_dir=tmp_path, port=free_port())
    state = server.start()
    try:
        assert ping(state.uri)
        # a second start (e.g. another `recsys mongo start`) finds the running server
        again = EmbeddedMongo(state_dir=tmp_path, port=state.port).start()
        assert again.pid == state.pid
        assert EmbeddedMongo(state_dir=tmp_path).read_state() == state
    finally:
        assert server.stop()
    assert server.read_state() is None
    assert not ping(state.uri, timeout_ms=300)
    assert not server.stop()


def test_refuses_a_port_held_by_a_foreign_server(tmp_path, mongo_uri):
    port = int(mongo_uri.rsplit(":", 1)[1])
    with pytest.raises(MongoServerError, match="did not start"):
        EmbeddedMongo(state_dir=tmp_path, port=port).start()
