"""A loopback TCP proxy in front of the S3 server, to make the store slow or flaky on demand.

Every Airflow process reaches the store through this proxy (the AWS connection's endpoint is
the proxy's port), so a test can change how the store behaves while DAG runs are in flight:

- ``latency``: each response is held back this many seconds after a request (server think time);
- ``stall``: connections are accepted and requests read, but nothing is ever answered
  (a hung server: only the client's read timeout gets it out);
- ``reset``: new connections are accepted and immediately reset (RST);
- ``reset_every``: every n-th new connection is reset, the others pass (a flaky network).

It runs on threads in the test process: two per connection, which is plenty for botocore's
small connection pools.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass

LOOPBACK = "127.0.0.1"
CHUNK = 256 * 1024


@dataclass
class ProxyStats:
    connections: int = 0
    resets: int = 0
    stalled: int = 0
    delayed: int = 0  # responses held back by ``latency``
    bytes_up: int = 0  # client -> server
    bytes_down: int = 0  # server -> client


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = LOOPBACK) -> None:
        self.target = (target_host, target_port)
        self.latency = 0.0
        self.stall = False
        self.reset = False
        self.reset_every = 0
        self.stats = ProxyStats()
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="xcs-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    def normal(self) -> None:
        """Pass everything through at full speed; close stalled connections."""
        self.latency, self.stall, self.reset, self.reset_every = 0.0, False, False, 0
        self.drop_all()

    def drop_all(self) -> None:
        """Reset every open connection (clients see a reset on their next read or write)."""
        with self._lock:
            socks, self._open = list(self._open), set()
        for s in socks:
            _hard_close(s)

    def stop(self) -> None:
        self._closed.set()
        try:
            # shutdown() wakes the accept() blocked in the loop's thread; close() alone leaves
            # the port accepting until that accept() returns.
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._listener.close()
        except OSError:
            pass
        self.drop_all()

    # ------------------------------------------------------------------------ internals

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.stats.connections += 1
                n = self.stats.connections
                reset = self.reset or (self.reset_every and n % self.reset_every == 0)
                if reset:
                    self.stats.resets += 1
            if reset:
                _hard_close(client)
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._open.add(s)

    def _serve(self, client: socket.socket) -> None:
        self._track(client)
        if self.stall:
            with self._lock:
                self.stats.stalled += 1
            self._swallow(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
        except OSError:
            _hard_close(client)  # the server is down: the client sees a reset, as it would
            return
        self._track(upstream)
        answered = threading.Event()  # set once the server answered the latest request
        answered.set()
        up = threading.Thread(
            target=self._pump, args=(client, upstream, True, answered), daemon=True
        )
        up.start()
        self._pump(upstream, client, False, answered)
        up.join(timeout=1)

    def _swallow(self, client: socket.socket) -> None:
        """Read and discard until the client gives up (or the proxy goes back to normal)."""
        try:
            while client.recv(CHUNK):
                pass
        except OSError:
            pass
        _hard_close(client)

    def _pump(self, src: socket.socket, dst: socket.socket, upward: bool, answered: threading.Event) -> None:
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                if upward:
                    answered.clear()
                    with self._lock:
                        self.stats.bytes_up += len(data)
                else:
                    if not answered.is_set():
                        answered.set()
                        if self.latency:
                            with self._lock:
                                self.stats.delayed += 1
                            if self._closed.wait(self.latency):
                                break
                    with self._lock:
                        self.stats.bytes_down += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)


def _hard_close(s: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), like a crashed peer or a middlebox dropping the flow."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
