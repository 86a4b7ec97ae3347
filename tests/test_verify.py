"""`feedlab verify`: the samples verify clean; each kind of drift in a frame is reported with its
line number; a truncated file exits 1; a file that is not a recording exits 2 with one line.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from mocks.recording import read_recording
from mocks.recording_cli import main
from mocks.verify import verify

SAMPLES = Path(__file__).resolve().parents[1] / "recordings"


def sample(vendor: str) -> Path:
    return SAMPLES / f"{vendor}-synthetic-seed7.jsonl.gz"


@pytest.mark.parametrize("vendor", ["massive", "theta", "amberdata"])
def test_the_samples_verify_clean(vendor: str, capsys: pytest.CaptureFixture[str]) -> None:
    report = verify(sample(vendor))
    assert report.ok, report.lines()
    assert report.frames > 100
    assert main(["verify", str(sample(vendor))]) == 0
    assert capsys.readouterr().out.strip().endswith("0 problems: ok")


def edited(tmp_path: Path, vendor: str, find: str, change: str, nth: int = 0) -> tuple[Path, int]:
    """A copy of the sample with the `nth` server line containing `find` edited (in the payload,
    as the vendor would send it); returns the path and the edited line's number."""
    lines = gzip.decompress(sample(vendor).read_bytes()).decode().splitlines()
    seen = 0
    for i, line in enumerate(lines):
        record = orjson.loads(line)
        if record.get("from") == "server" and find in record.get("data", ""):
            if seen == nth:
                record["data"] = record["data"].replace(find, change, 1)
                lines[i] = orjson.dumps(record).decode()
                path = tmp_path / f"{vendor}.jsonl"
                path.write_text("\n".join(lines) + "\n")
                return path, i + 1
            seen += 1
    raise AssertionError(f"{find!r} not in {vendor}")


def only_problem(path: Path) -> tuple[int, str]:
    report = verify(path)
    assert len(report.problems) == 1, report.lines()
    return report.problems[0].line, report.problems[0].text


@pytest.mark.parametrize(
    ("vendor", "find", "change", "expected"),
    [
        ("massive", '"bx":', '"bid_exchange":', "Q.bid_exchange: unknown field"),
        ("massive", '"bp":', '"bp":"x","was":', "Q.bp: expected number, got string"),
        ("massive", '"status":"auth_success"', '"status":"authorised"', "unknown status"),
        ("massive", ',"c":[', ',"conditions":[', "missing field"),
        ("theta", '"bid_condition":', '"bid_cond":', "quote.bid_cond: unknown field"),
        ("theta", '"response":"SUBSCRIBED"', '"response":"QUEUED"', "unknown response 'QUEUED'"),
        ("theta", '"type":"STATUS"', '"type":"PING"', "unknown message type"),
        ("amberdata", '"markIv":', '"markIV":', "unknown field"),
        ("amberdata", '"tradeId":', '"tradeId":7,"was":', "tradeId: expected string, got integer"),
    ],
)
def test_each_drift_is_reported_with_its_line(
    tmp_path: Path, vendor: str, find: str, change: str, expected: str
) -> None:
    path, line = edited(tmp_path, vendor, find, change)
    report = verify(path)
    assert not report.ok
    assert line in {p.line for p in report.problems}
    texts = " | ".join(p.text for p in report.problems if p.line == line)
    assert expected in texts


def test_a_changed_type_names_field_and_types(tmp_path: Path) -> None:
    path, line = edited(tmp_path, "massive", '"q":', '"q":"1","was":', nth=0)
    report = verify(path)
    assert any(
        p.line == line and ".q: expected integer, got string" in p.text for p in report.problems
    )


def test_all_differences_of_one_frame_are_reported(tmp_path: Path) -> None:
    path, line = edited(tmp_path, "theta", '"bid_size":', '"bidSize":')
    texts = [p.text for p in verify(path).problems if p.line == line]
    assert any("bidSize: unknown field" in t for t in texts)
    assert any("bid_size: missing field" in t for t in texts)


def test_sequence_and_time_going_back(tmp_path: Path) -> None:
    recording = read_recording(sample("massive"))
    quotes = [
        (r.line, orjson.loads(r.data))
        for r in recording.records
        if r.side == "server" and '"ev":"Q"' in str(r.data)
    ]
    (line, frame) = quotes[5]
    q = frame[0]["q"]
    path, edited_line = edited(tmp_path, "massive", f'"q":{q}', '"q":1')
    assert edited_line == line
    found, text = only_problem(path)
    assert found == line and "sequence q went from" in text and "to 1" in text

    theta = read_recording(sample("theta"))
    trades = [
        (r.line, orjson.loads(r.data))
        for r in theta.records
        if r.side == "server" and '"type":"TRADE"' in str(r.data) and "OPTION" in str(r.data)
    ]
    line, message = trades[3]
    ms = message["trade"]["ms_of_day"]
    path, edited_line = edited(tmp_path, "theta", f'"ms_of_day":{ms}', '"ms_of_day":1')
    texts = [p.text for p in verify(path).problems if p.line == edited_line]
    assert any("time went back" in t for t in texts)


def test_data_without_a_subscription(tmp_path: Path) -> None:
    path, line = edited(
        tmp_path, "massive", '"sym":"O:SPY250321C00575000"', '"sym":"O:SPY250321C00999000"', 3
    )
    found, text = only_problem(path)
    assert found == line and "without a subscription" in text


def test_an_amberdata_push_for_an_unknown_subscription(tmp_path: Path) -> None:
    recording = read_recording(sample("amberdata"))
    push = next(r for r in recording.records if '"method":"subscription"' in str(r.data))
    sub_id = orjson.loads(push.data)["params"]["subscription"]
    path, line = edited(tmp_path, "amberdata", sub_id, "not-an-id", nth=2)
    assert any("never returned" in p.text and p.line == line for p in verify(path).problems)


def test_a_truncated_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = sample("massive").read_bytes()
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    assert main(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert "truncated" in out and out.strip().endswith("DIFFERENCES")


def test_a_drifted_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, line = edited(tmp_path, "massive", '"bx":', '"bxx":')
    assert main(["verify", str(path)]) == 1
    assert f"{path}:{line}: conn 1: " in capsys.readouterr().out


def test_not_a_recording_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"format":"feedlab-recording","version":1,"vendor":"massive"}\nnope\n{}\n')
    assert main(["verify", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"feedlab: error: {path}: line 2: not JSON\n"
