from collections.abc import Sequence

def open_all(
    address: int, keys: Sequence[bytes], sigs: Sequence[bytes], messages: Sequence[bytes]
) -> bytes: ...
