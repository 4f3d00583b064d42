"""The cost of the work integrity checking and encryption add, measured on this machine: how
fast one core and all cores hash (BLAKE3, the default frame digest, and SHA-256, the digest of
format 1 objects and of ``hash = sha256``), encrypt (AES-256-GCM, every
sealed frame) and copy memory, in 1 MiB frames.

    .venv/bin/python -m bench.floor [--mib 300]

It prints the throughputs and what they mean for a value of ``--mib``: a push hashes every
byte once and a pull hashes it once more, so hashing alone costs ``2 x size / rate`` of the
round trip however the rest is done. Compare that with the bare baseline's whole round trip
(``bench.run``'s ``baseline`` contender) to see how close to it a checked value can come.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

MIB = 1024 * 1024


def _rate(work, frames: list[bytes], threads: int) -> float:
    """Bytes per second of ``work`` over ``frames`` on ``threads`` threads (best of 3)."""
    total = sum(len(f) for f in frames)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, frames[: threads * 2]))  # warm up
        for _ in range(3):
            started = time.perf_counter()
            list(pool.map(work, frames))
            best = min(best, time.perf_counter() - started)
    return total / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=300)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    frames = [os.urandom(MIB) for _ in range(min(args.mib, 256))]
    size = args.mib * MIB
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead, nonce = AESGCM(AESGCM.generate_key(bit_length=256)), os.urandom(12)
    sealed = threading.local()

    def seal(frame: bytes) -> None:
        """Into a buffer each thread reuses, as a sealing path that allocates nothing would."""
        out = getattr(sealed, "buffer", None)
        if out is None or len(out) != len(frame) + 16:
            out = sealed.buffer = bytearray(len(frame) + 16)
        aead.encrypt_into(nonce, frame, None, out)  # a benchmark: one nonce is fine

    import blake3

    works = (
        ("BLAKE3", lambda f: blake3.blake3(f).digest()),
        ("SHA-256", lambda f: hashlib.sha256(f).digest()),
        ("AES-256-GCM", seal),
        ("memory copy", bytearray),
    )
    for name, work in works:
        one, every = _rate(work, frames, 1), _rate(work, frames, cores)
        print(
            f"{name:12s} 1 core {one / 1e9:5.2f} GB/s   {cores} cores {every / 1e9:5.2f} GB/s   "
            f"{args.mib} MiB once: {size / every:.3f} s on all cores"
        )
        if name != "memory copy":
            print(f"{'':12s} push + pull, {args.mib} MiB each: at least {2 * size / every:.3f} s")


if __name__ == "__main__":
    main()
