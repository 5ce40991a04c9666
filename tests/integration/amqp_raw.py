"""A client that speaks raw AMQP frames through pika's codec, for tests that must send what a
well-behaved client never would."""

import socket
import struct

import pika.frame
import pika.spec

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


class RawClient:
    def __init__(self, port, timeout_s=5):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.buffer = b""

    def send(self, data):
        self.sock.sendall(data)

    def send_method(self, channel, method):
        self.send(pika.frame.Method(channel, method).marshal())

    def recv_exactly(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("server closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_frame(self):
        """(frame type, channel, decoded method or raw payload)."""
        header = self.recv_exactly(7)
        frame_type, channel, size = struct.unpack(">BHI", header)
        payload = self.recv_exactly(size)
        end = self.recv_exactly(1)
        assert end == b"\xce", end
        if frame_type == 1:
            class_id, method_id = struct.unpack(">HH", payload[:4])
            method = pika.spec.methods[(class_id << 16) | method_id]()
            method.decode(payload, 4)
            return frame_type, channel, method
        return frame_type, channel, payload

    def read_method(self):
        """The next method, skipping heartbeats."""
        while True:
            frame_type, channel, body = self.read_frame()
            if frame_type == 1:
                return channel, body

    def closed_by_server(self):
        """True once the server has closed the socket (reads until EOF or a reset, which is what
        a close with unread input gives); False if it stays open until the timeout."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def handshake(self, heartbeat=0, user="guest", password="guest", vhost="/"):
        self.send(PROTOCOL_HEADER)
        _, start = self.read_method()
        assert isinstance(start, pika.spec.Connection.Start)
        response = b"\0" + user.encode() + b"\0" + password.encode()
        capabilities = {"authentication_failure_close": True}
        self.send_method(0, pika.spec.Connection.StartOk(
            client_properties={"capabilities": capabilities}, mechanism="PLAIN",
            response=response))
        _, tune = self.read_method()
        assert isinstance(tune, pika.spec.Connection.Tune), tune
        self.send_method(0, pika.spec.Connection.TuneOk(
            channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=heartbeat))
        self.send_method(0, pika.spec.Connection.Open(virtual_host=vhost))
        _, open_ok = self.read_method()
        return open_ok

    def close(self):
        self.sock.close()
