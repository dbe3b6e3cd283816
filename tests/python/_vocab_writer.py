"""Helper process for the kill-mid-write test in test_encoder.py.

Usage: python _vocab_writer.py PATH BATCH

Opens the file-store vocabulary at PATH and grows it forever, BATCH new
symbols per call, in a fixed order: symbol "s<i>" always gets id i. After the
load it prints "ready <size>", and after every completed write the new size,
one line each, so the parent knows which states were certainly reached.
"""

import sys

from kato_gpu.encoder import SymbolVocabularyEncoder


def main() -> None:
    path, batch = sys.argv[1], int(sys.argv[2])
    encoder = SymbolVocabularyEncoder(path)
    size = encoder.vocab_size
    print(f"ready {size}", flush=True)
    while True:
        encoder.encode_ids([f"s{i}" for i in range(size, size + batch)])
        size += batch
        print(size, flush=True)


if __name__ == "__main__":
    main()
