"""A TCP proxy on 127.0.0.1 that can be stopped (dropping every connection) and started again on
the same port: an object-store endpoint that goes away mid-read and comes back."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target_port``, one pair of threads a connection."""

    def __init__(self, target_port: int, port: int = 0):
        self.target = ("127.0.0.1", target_port)
        self.port = port
        self.connections = 0  # accepted so far, over every start
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._drop_at: int | None = None  # stop once this many more response bytes went through
        self._back_after: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener, self._stopping = listener, threading.Event()
        self._spawn(self._accept, listener, self._stopping)
        return self

    def stop(self) -> None:
        """Stop listening and reset every open connection (the clients see them drop)."""
        if self._listener is None:
            return
        self._stopping.set()
        with self._lock:
            threads, self._threads = self._threads, []
            sockets, self._sockets = self._sockets, set()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
                s.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(5)
        for s in sockets:
            s.close()
        self._listener.close()
        self._listener = None

    def drop_after(self, response_bytes: int, back_after: float | None = None) -> None:
        """Stop once ``response_bytes`` more bytes came back from the target, mid-response;
        start again ``back_after`` seconds later (never when None)."""
        with self._lock:
            self._drop_at, self._back_after = response_bytes, back_after

    def _drop(self, back_after: float | None) -> None:
        self.stop()
        if back_after is not None:
            threading.Timer(back_after, self.start).start()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        with self._lock:
            self._threads.append(t)
        t.start()

    def _accept(self, listener: socket.socket, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if stopping.is_set():
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
                self.connections += 1
            self._spawn(self._pump, client, upstream, False)
            self._spawn(self._pump, upstream, client, True)

    def _pump(self, src: socket.socket, dst: socket.socket, response: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if response and self._drop_at is not None:
                    with self._lock:
                        if self._drop_at is not None and len(data) >= self._drop_at:  # send part, then drop
                            data, back_after, self._drop_at = data[: self._drop_at], self._back_after, None
                            threading.Thread(target=self._drop, args=(back_after,), daemon=True).start()
                        elif self._drop_at is not None:
                            self._drop_at -= len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:  # one side is done: drop the connection both ways
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
