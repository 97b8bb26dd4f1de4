"""A study's SQLite store is created and migrated once, by the command that owns it, and no other opener
ever sees it half-made (two migrations at once kill one of them: ``table _alembic_tmp_experiments already
exists``). The race is reproduced deterministically: the owner's migration is held open while others open."""

from __future__ import annotations

import subprocess
import sys
import threading

import mlflow.store.db.utils as db_utils
import pytest
import yaml
from mlflow.tracking import MlflowClient

from nerlab.platform.tracking import runs as tracking, stores
from nerlab.platform.errors import UsageError


def test_a_store_is_never_seen_half_made_and_is_migrated_once(tmp_path, monkeypatch):
    out = tmp_path / "study"
    out.mkdir()
    (out / "study.yaml").write_text(yaml.safe_dump({"name": "s", "output": str(out)}))  # a study whose store is being created
    db = out / "mlflow.db"
    uri = f"sqlite:///{db}"
    owner = threading.current_thread()
    inside, release = threading.Event(), threading.Event()
    migrate = db_utils._upgrade_db

    def held(engine):
        if threading.current_thread() is not owner:  # the owner's migration, stopped half-way
            inside.set()
            assert release.wait(120)
        migrate(engine)

    monkeypatch.setattr(db_utils, "_upgrade_db", held)
    errors = []
    creator = threading.Thread(target=lambda: _catch(errors, tracking.create_store, uri))
    creator.start()
    try:
        assert inside.wait(120), errors
        # Half-way through the owner's migration, the store's place is empty: nothing to open twice.
        assert not db.exists()
        with pytest.raises(UsageError, match="the MLflow store does not exist"):
            stores.client(uri)
        for verb in (["leaderboard", str(out)], ["study", "status", str(out)]):
            p = subprocess.run([sys.executable, "-m", "nerlab.platform.cli", *verb], capture_output=True, text=True,
                               timeout=120)
            assert p.returncode == 2, (verb, p.stdout, p.stderr)
            assert len(p.stderr.strip().splitlines()) == 1 and "does not exist" in p.stderr, p.stderr
            assert not db.exists()  # a reader created nothing
    finally:
        release.set()
        creator.join(120)
    assert not errors, errors
    assert db.is_file() and sorted(p.name for p in out.iterdir()) == ["mlflow.db", "study.yaml"]  # no temp left

    # Complete: opening it (a server, a client) migrates nothing, and its schema is MLflow's latest.
    monkeypatch.setattr(db_utils, "_initialize_tables", lambda engine: pytest.fail("the store was migrated again"))
    c = MlflowClient(uri)
    assert [e.name for e in c.search_experiments()] == ["Default"]
    db_utils._verify_schema(db_utils.create_sqlalchemy_engine(uri))
    tracking.create_store(uri)  # the owner again (a resume): the store is there, left as it is
    assert [e.name for e in c.search_experiments()] == ["Default"]


def _catch(errors: list, fn, *args) -> None:
    try:
        fn(*args)
    except BaseException as e:  # noqa: BLE001 - reported by the test
        errors.append(e)
