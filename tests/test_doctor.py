"""``hcpsync doctor`` (issue 11): one line per check with what to do; exit 0 when all pass, 1 otherwise.

Against moto's server, through ``hcpsync.cli.main`` as the command line calls it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import FAKE_ENV, fast_put

import hcpsync.doctor
from hcpsync.cli import main


@pytest.fixture
def seeded(bucket: str) -> str:
    fast_put(bucket, {"HCP_1200/100307/T1w/a.nii.gz": b"a", "HCP_Retest/103818/T1w/b.nii.gz": b"b"})
    return bucket


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, str], str]:
    """Exit code, the text line of each check (by name), and everything printed."""
    code = main(["doctor", *args])
    out = capsys.readouterr()
    lines = {line.split()[1] if not line.split()[1].startswith("release") else " ".join(line.split()[1:3]): line
             for line in out.out.splitlines()}
    return code, lines, out.out + out.err


def test_good_credentials_all_pass(capsys: pytest.CaptureFixture[str], moto_url: str, seeded: str,
                                   tmp_path: Path) -> None:
    code, lines, printed = doctor(capsys, "--endpoint-url", moto_url, "--bucket", seeded, "--dest", str(tmp_path))
    assert code == 0, printed
    assert lines["credentials"].startswith("OK") and "environment variables" in lines["credentials"]
    assert lines["clock"].startswith("OK") and lines["region"].startswith("OK") and "us-east-1" in lines["region"]
    assert lines["release HCP_1200"].startswith("OK") and lines["release HCP_Retest"].startswith("OK")
    assert lines["dest"].startswith("OK") and "GiB free" in lines["dest"]
    assert lines["proxy"].startswith("OK") and lines["tls"].startswith("WARN")  # moto's server is plain http
    assert FAKE_ENV["AWS_SECRET_ACCESS_KEY"] not in printed and FAKE_ENV["AWS_ACCESS_KEY_ID"] not in printed


def test_missing_credentials(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, moto_url: str,
                             seeded: str) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    code, lines, printed = doctor(capsys, "--endpoint-url", moto_url, "--bucket", seeded)
    assert code == 1
    assert lines["credentials"].startswith("FAIL") and "no AWS credentials" in lines["credentials"]
    assert "BALSA" in lines["credentials"] and "Traceback" not in printed


def test_a_profile_that_does_not_exist(capsys: pytest.CaptureFixture[str], moto_url: str, seeded: str) -> None:
    code, lines, _ = doctor(capsys, "--endpoint-url", moto_url, "--bucket", seeded, "--profile", "hcp-nope")
    assert code == 1
    assert lines["credentials"].startswith("FAIL") and "hcp-nope" in lines["credentials"]


def test_an_empty_release_prefix(capsys: pytest.CaptureFixture[str], moto_url: str, seeded: str) -> None:
    code, lines, _ = doctor(capsys, "--endpoint-url", moto_url, "--bucket", seeded, "--release", "HCP_1200",
                            "--release", "HCP_YA_2025")
    assert code == 1
    assert lines["release HCP_1200"].startswith("OK")
    bad = lines["release HCP_YA_2025"]
    assert bad.startswith("FAIL") and "is empty" in bad and "BALSA" in bad


def test_free_space_at_dest(capsys: pytest.CaptureFixture[str], moto_url: str, seeded: str, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("x")
    code, lines, _ = doctor(capsys, "--endpoint-url", moto_url, "--bucket", seeded, "--dest", str(tmp_path / "file"))
    assert code == 1 and lines["dest"].startswith("FAIL") and "not a folder" in lines["dest"]
    monkeypatch.setattr(hcpsync.doctor, "MIN_FREE", 1 << 60)  # more than any disk holds
    code, lines, _ = doctor(capsys, "--endpoint-url", moto_url, "--bucket", seeded, "--dest", str(tmp_path / "new"))
    assert code == 1 and lines["dest"].startswith("FAIL") and "GiB free at" in lines["dest"]


def test_clock_skew_from_the_servers_date(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                          moto_url: str, seeded: str) -> None:
    monkeypatch.setattr(hcpsync.doctor, "_now", lambda: time.time() + 1200)  # this machine 20 minutes fast
    code, lines, _ = doctor(capsys, "--endpoint-url", moto_url, "--bucket", seeded)
    assert code == 1
    assert lines["clock"].startswith("FAIL") and "s ahead of the S3 server's" in lines["clock"]
    assert "RequestTimeTooSkewed" in lines["clock"]


def test_json(capsys: pytest.CaptureFixture[str], moto_url: str, seeded: str) -> None:
    code = main(["doctor", "--endpoint-url", moto_url, "--bucket", seeded, "--release", "nope", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["ok"] is False
    status = {c["check"]: c["status"] for c in doc["checks"]}
    assert status["credentials"] == "ok" and status["release nope"] == "fail" and status["dest"] == "skip"


def test_the_endpoints_tls(capsys: pytest.CaptureFixture[str], moto_url: str, seeded: str, tmp_path: Path) -> None:
    from netfixtures import NetFixtures, make_ca_and_cert

    ca, cert, key = make_ca_and_cert(tmp_path)
    net = NetFixtures()
    try:
        url = net.tls_front(moto_url, cert, key)
        code, lines, _ = doctor(capsys, "--endpoint-url", url, "--bucket", seeded, "--release", "HCP_1200")
        assert code == 1 and lines["tls"].startswith("FAIL") and "certificate" in lines["tls"]
        assert "--ca-bundle" in lines["tls"]
        code, lines, printed = doctor(capsys, "--endpoint-url", url, "--bucket", seeded, "--release", "HCP_1200",
                                      "--ca-bundle", str(ca))
        assert code == 0, printed
        assert lines["tls"].startswith("OK") and str(ca) in lines["tls"]
    finally:
        net.stop()
