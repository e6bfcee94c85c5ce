"""Drives tuspy (PyPI `tuspy`, pinned in tests/tus/requirements.txt) for
tests/tus.rs: `start ENDPOINT FILE STOP_AT CHUNK` creates an upload on a
model's signed upload URL and sends its first STOP_AT bytes in CHUNK-byte
PATCHes; `resume URL FILE CHUNK` asks the server for the offset (HEAD) and
sends the rest. Every PATCH carries `Upload-Checksum: sha256 ...`. Prints
one JSON line: the upload URL and the offsets seen."""

import hashlib
import json
import sys

from tusclient import client
from tusclient.uploader import Uploader


class Sha256Uploader(Uploader):
    CHECKSUM_ALGORITHM_PAIR = ("sha256", hashlib.sha256)


def main():
    mode = sys.argv[1]
    if mode == "start":
        endpoint, path, stop_at, chunk = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        up = Sha256Uploader(
            file_path=path,
            client=client.TusClient(endpoint),
            chunk_size=chunk,
            upload_checksum=True,
            metadata={"filename": "model.stl"},
        )
        up.upload(stop_at=stop_at)
        print(json.dumps({"url": up.url, "offset": up.offset}))
    elif mode == "resume":
        url, path, chunk = sys.argv[2], sys.argv[3], int(sys.argv[4])
        up = Sha256Uploader(file_path=path, url=url, chunk_size=chunk, upload_checksum=True)
        resumed_at = up.offset
        up.upload()
        print(json.dumps({"url": up.url, "resumed_at": resumed_at, "offset": up.offset}))
    else:
        sys.exit("usage: upload.py start|resume ...")


if __name__ == "__main__":
    main()
