"""Work directories: the advisory lock, umask-honouring atomic writes, stale temporaries,
and the one-line error contract of the commands."""

from __future__ import annotations

import os
import stat

import pytest

from stovtal.utils.cli import cli_entry, error_line
from stovtal.utils.fileio import atomic_write_json, remove_stale_temporaries
from stovtal.utils.workdir_lock import LOCK_FILE, WorkdirBusy, critical_section, workdir_lock


def test_exclusive_lock_refuses_a_second_holder_naming_the_pid(tmp_path):
    with workdir_lock(tmp_path / "w"):
        with pytest.raises(WorkdirBusy, match=rf"PID {os.getpid()}") as exc:
            with workdir_lock(tmp_path / "w"):
                pass
        assert str(tmp_path / "w") in str(exc.value)
        with pytest.raises(WorkdirBusy):  # a --shard job neither
            with workdir_lock(tmp_path / "w", shared=True):
                pass
    with workdir_lock(tmp_path / "w"):  # released at the end of the block
        pass
    assert (tmp_path / "w" / LOCK_FILE).exists()


def test_shared_locks_coexist_and_exclude_an_ordinary_run(tmp_path):
    with workdir_lock(tmp_path, shared=True), workdir_lock(tmp_path, shared=True):
        with pytest.raises(WorkdirBusy, match="--shard job"):
            with workdir_lock(tmp_path):
                pass
        with critical_section(tmp_path):  # the short check-then-write section still works
            pass


def test_lock_is_released_when_the_holder_dies(tmp_path):
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        with workdir_lock(tmp_path):
            os._exit(0)  # no clean-up code runs, like kill -9
    os.waitpid(pid, 0)
    with workdir_lock(tmp_path):
        pass


def test_exclusive_holder_removes_stale_temporaries(tmp_path):
    (tmp_path / "sub").mkdir()
    stale = [tmp_path / ".stage.json.ab_cd123.tmp", tmp_path / "sub" / ".last.pt.0123abcd.tmp"]
    for p in stale:
        p.write_bytes(b"")
    keep = [tmp_path / "notes.tmp", tmp_path / ".hidden", tmp_path / "sub" / "x.json"]
    for p in keep:
        p.write_text("x")
    with workdir_lock(tmp_path, shared=True):  # a shared holder may not: others may be writing
        pass
    assert all(p.exists() for p in stale)
    with workdir_lock(tmp_path):
        pass
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)
    assert remove_stale_temporaries(tmp_path) == 0


def test_temporary_names_match_the_cleaner(tmp_path, monkeypatch):
    def killed(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # a kill between writing and renaming: the temporary stays
        m.setattr(os, "replace", killed)
        m.setattr(os, "unlink", lambda path: None)
        with pytest.raises(KeyboardInterrupt):
            atomic_write_json(tmp_path / "stage.json", {"x": 1})
    assert len(os.listdir(tmp_path)) == 1
    assert remove_stale_temporaries(tmp_path) == 1 and os.listdir(tmp_path) == []


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        with open(tmp_path / "b.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE(os.stat(tmp_path / "b.txt").st_mode)


def test_error_line_is_one_line():
    assert error_line(ValueError("a.json: bad\n  line 2")) == "error: a.json: bad | line 2"
    assert error_line(ValueError()) == "error: ValueError"
    worker = ("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
              '  File "x.py", line 1, in f\nstovtal.data.formats.DataError: video \'v\': feature file f.npy: T = 0\n')
    assert error_line(ValueError(worker)) == "error: video 'v': feature file f.npy: T = 0"
    assert len(error_line(ValueError("x" * 10_000))) < 2100


def test_cli_entry_contract(capsys, monkeypatch):
    @cli_entry
    def main(argv):
        if argv == ["user"]:
            raise FileNotFoundError("cfg.yaml: config file not found")
        if argv == ["bug"]:
            raise KeyError("internal")
        return 0

    assert main(["user"]) == 2
    assert capsys.readouterr().err == "error: cfg.yaml: config file not found\n"
    with pytest.raises(KeyError):  # a bug keeps its traceback
        main(["bug"])
    with pytest.raises(FileNotFoundError):  # --debug: the traceback of a user error too
        main(["user", "--debug"])
    monkeypatch.setenv("STOVTAL_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["user"])
    assert main([]) == 0

