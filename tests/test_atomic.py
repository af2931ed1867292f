import json

import pytest

from brainseg.atomic import atomic_write, atomic_write_json, atomic_write_text, remove_stale_temporaries


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "best.pt"
    path.write_bytes(b"good")

    def failing_write(handle):
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, failing_write)
    assert path.read_bytes() == b"good"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_text_and_json_are_written_whole(tmp_path):
    atomic_write_text(tmp_path / "a" / "b.txt", "café\n")  # the folder is created
    assert (tmp_path / "a" / "b.txt").read_bytes() == "café\n".encode()
    atomic_write_json(tmp_path / "r.json", {"run": "r", "dsc": 0.5})
    assert (tmp_path / "r.json").read_text() == '{\n  "run": "r",\n  "dsc": 0.5\n}\n'
    assert json.loads((tmp_path / "r.json").read_text()) == {"run": "r", "dsc": 0.5}


def test_the_temporaries_of_killed_writes_are_removed_and_nothing_else(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"good")
    (tmp_path / ".last.pt.k3j9x.tmp").write_bytes(b"half")  # what a SIGKILL mid-write leaves
    (tmp_path / ".hidden").write_bytes(b"keep")
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == [".last.pt.k3j9x.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "last.pt"]
    assert remove_stale_temporaries(tmp_path / "absent") == []
