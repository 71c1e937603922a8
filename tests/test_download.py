"""`biotok download` against a local HTTP server on 127.0.0.1 serving the shared real recordings in
PhysioNet's layout: MNE's checksummed fetcher, resume with range requests, and the offline error."""

import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from data_prep.download import DownloadArgs, fetch, main, run
from data_prep.errors import BiosignalError


def _server(real: Path, corrupt: set[str] | None = None):
    """PhysioNet paths -> the files under `real`; Range requests answered with 206."""
    ranges = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            path = self.path.split("?")[0]
            eeg = re.fullmatch(r"/files/eegmmidb/1\.0\.0/S(\d{3})/(S\d{3}R\d{2}\.edf)", path)
            if eeg:
                local = real / ("eegbci" if int(eeg.group(1)) <= 3 else "eegbci-more") / eeg.group(2)
            else:
                local = real / re.sub(r"^/files/(\w+)/[\d.]+/(patient001/)?", r"\1/", path)
            if not local.is_file():
                self.send_error(404)
                return
            data = local.read_bytes()
            if local.name in (corrupt or ()):
                data = data[:-1] + bytes([data[-1] ^ 1])
            start = 0
            if "Range" in self.headers:
                start = int(re.match(r"bytes=(\d+)-", self.headers["Range"]).group(1))
                ranges.append((local.name, start))
                self.send_response(206)
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            self.wfile.write(data[start:])

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/files", ranges


def test_download_fetches_checks_and_resumes(real, tmp_path):
    server, mirror, ranges = _server(real)
    try:
        cache = tmp_path / "cache"
        # a run cut off mid-file: the first 1,000 bytes of the MIT-BIH signal are already here
        part = cache / "mitdb" / "100.dat.part"
        part.parent.mkdir(parents=True)
        part.write_bytes((real / "mitdb" / "100.dat").read_bytes()[:1000])
        args = DownloadArgs(
            datasets="eegbci,mitdb", cache=str(cache), subjects="1", runs="4", mirror=mirror, progress=False
        )
        counts = run(args)
        assert counts == {"eegbci": 1, "mitdb": 3}
        for name in ("100.hea", "100.dat", "100.atr"):
            assert (cache / "mitdb" / name).read_bytes() == (real / "mitdb" / name).read_bytes()
        assert ("100.dat", 1000) in ranges and not part.exists()
        edf = cache / "eegbci" / "S001R04.edf"
        assert edf.read_bytes() == (real / "eegbci" / "S001R04.edf").read_bytes()
        # a second run fetches nothing
        requests_before = len(ranges)
        assert run(args) == counts and len(ranges) == requests_before
    finally:
        server.shutdown()


def test_a_file_that_fails_mne_checksums_is_refused(real, tmp_path):
    server, mirror, _ = _server(real, corrupt={"S002R04.edf"})
    try:
        args = DownloadArgs(
            datasets="eegbci", cache=str(tmp_path), subjects="2", runs="4", mirror=mirror, progress=False
        )
        with pytest.raises(BiosignalError, match="EEGBCI subject 2"):
            run(args)
        assert not (tmp_path / "eegbci" / "S002R04.edf").exists()
    finally:
        server.shutdown()


def test_offline_is_a_clear_error(tmp_path, capsys):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/files/mitdb/1.0.0/100.hea"
    with pytest.raises(BiosignalError, match="cannot reach it .*offline"):
        fetch(url, tmp_path / "100.hea", timeout=5)
    code = main(
        [
            "--datasets",
            "mitdb",
            "--cache",
            str(tmp_path),
            "--mirror",
            f"http://127.0.0.1:{port}/files",
            "--progress",
            "false",
        ]
    )
    assert code == 2 and "cannot reach" in capsys.readouterr().err
    with pytest.raises(Exception, match="unknown"):
        run(DownloadArgs(datasets="nope", cache=str(tmp_path)))
