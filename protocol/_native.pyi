# protocol/_native.c: the optional C module (signature checks by the batch, base32).
from collections.abc import Sequence

def open_all(
    address: int, keys: Sequence[bytes], sigs: Sequence[bytes], messages: Sequence[bytes]
) -> bytes: ...
def b32encode(data: bytes, /) -> str: ...
