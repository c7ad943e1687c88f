"""Sample replies built in place: the wire bytes of a message around its arrays, which the
caller fills directly (the mirror gathers a batch's ~13 MB of states straight into the frame
ZeroMQ sends: no copy into msgpack's buffer, none into a bytes object, and with a reused buffer
no fresh pages).  The bytes are exactly `tempest_common.wire.encode`'s (tests/unit/
test_replay_inplace.py checks that), built from wire's own field codecs.
"""
from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

from tempest_common.messages import MESSAGE_TYPES, field_specs
from tempest_common.wire import _CODECS, _DTYPES, SCHEMA_VERSION, MessageError, _py, _validate


def _bin_header(n: int) -> bytes:
    """msgpack's header of an n-byte bin (the smallest form, as msgpack.packb writes it)."""
    if n < 1 << 8:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 1 << 16:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


class InPlace:
    """The wire bytes of a `cls` message, with the data of its array fields left to fill:

        out = InPlace(SampleReply, {"request_id": 7, "error": None},
                      {"index": (np.uint64, (b,)), "state": (np.float16, (b, d)), ...})
        out.arrays["state"][:] = ...            # fill every array (gather straight into it)
        sock.send(out.finish(), copy=False)     # the same bytes as encode(the message)

    `arrays` names every array field with its little-endian dtype and shape; `values` the other
    fields.  The views may be unaligned (their offsets follow the msgpack headers).  `buffer`: a
    uint8 array to build in when it is large enough (one no longer in flight: fresh multi-MB
    buffers cost page faults); `self.buffer` is the one used.
    """

    def __init__(self, cls: type, values: dict[str, Any], arrays: dict[str, tuple[Any, tuple[int, ...]]],
                 buffer: np.ndarray | None = None):
        if MESSAGE_TYPES.get(getattr(cls, "KIND", None)) is not cls:
            raise MessageError("unknown_kind", f"{cls.__name__} is not a registered message")
        specs = field_specs(cls)
        if set(values) | set(arrays) != {n for n, _ in specs} or set(values) & set(arrays):
            raise MessageError("bad_field", f"{cls.KIND}: in place needs each field once")
        packer = msgpack.Packer(use_bin_type=True)
        parts: list[bytes | int] = [packer.pack_map_header(len(specs) + 2), packer.pack("v"),
                                    packer.pack(SCHEMA_VERSION), packer.pack("kind"), packer.pack(cls.KIND)]
        size = sum(map(len, parts))
        holes = {}  # name -> (offset of its data, dtype, shape); an int in `parts` is a hole's size
        for name, meta in specs:
            if name in arrays:
                dt, shape = np.dtype(arrays[name][0]), tuple(int(d) for d in arrays[name][1])
                if meta["wire"] != "array" or dt.str not in _DTYPES:
                    raise MessageError("bad_array", f"{cls.KIND}.{name}: not an array field of a wire dtype")
                nbytes = math.prod(shape) * dt.itemsize
                # the array map as _enc_array writes it, minus its empty bin (c4 00), then the real header
                head = (packer.pack(name) + packer.pack({"dtype": dt.str, "shape": list(shape), "data": b""})[:-2]
                        + _bin_header(nbytes))
                holes[name] = (size + len(head), dt, shape)
                parts += [head, nbytes]
                size += len(head) + nbytes
            else:
                enc = _CODECS[meta["wire"]][0]
                value = values[name] if meta["wire"] in ("arrays", "game_state") else _py(values[name])
                parts.append(packer.pack(name) + packer.pack(enc(value, f"{cls.KIND}.{name}")))
                size += len(parts[-1])
        self.buffer = buffer if buffer is not None and buffer.size >= size else np.empty(size, np.uint8)
        self._frame = self.buffer[:size]
        pos = 0
        for p in parts:
            if isinstance(p, int):
                pos += p
            else:
                self._frame[pos:pos + len(p)] = np.frombuffer(p, np.uint8)
                pos += len(p)
        self.arrays = {name: self._frame[off:off + math.prod(shape) * dt.itemsize].view(dt).reshape(shape)
                       for name, (off, dt, shape) in holes.items()}
        self._message = lambda: cls(**values, **self.arrays)

    def finish(self) -> memoryview:
        """Check the filled message as encode() would; returns its bytes (a view on the buffer)."""
        _validate(self._message())
        return memoryview(self._frame)
